"""A running attempt's output as it is written, read from the worker's spool file on this host.

``logs --follow`` reads this when the job runs here (see :mod:`queuectl.store.spool`) and the
stored output otherwise. The text is decoded as the worker stores it (invalid UTF-8 replaced,
NUL shown as ``\\0``), so that when the attempt ends what the database kept can be lined up with
what was already printed (:func:`beyond`).
"""

from __future__ import annotations

import codecs
from typing import Callable, Optional

from queuectl.core.models import Job
from queuectl.store import Store
from queuectl.store.spool import SpoolReader, spool_dir_for

_KEPT_CHARS = 256 * 1024  # of what was printed, kept to line up the stored output with at the end
SKIPPED_START = "[... earlier output of this attempt skipped: queuectl logs ID has its stored tail ...]\n"


class LiveSource:
    """One attempt's spool, read as text; ``shown`` ends with what was handed out so far."""

    def __init__(self, reader: SpoolReader, attempt: int) -> None:
        self.reader = reader
        self.attempt = attempt
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.shown = ""

    def read(self) -> str:
        """What the job wrote since the last call (possibly nothing)."""
        data = self.reader.read()
        if not data:
            return ""
        text = self._decoder.decode(data).replace("\x00", "\\0")
        self.shown = (self.shown + text)[-_KEPT_CHARS:]
        return text

    def ended(self) -> bool:
        return self.reader.ended()

    def drop(self) -> None:
        """Close the file without reading what is left (the follow ended early)."""
        self.reader.close()

    def close(self) -> str:
        """Everything left, the decoder flushed; the file is closed."""
        text = self.read()
        rest = self._decoder.decode(b"", final=True)
        self.reader.close()
        self.shown = (self.shown + rest)[-_KEPT_CHARS:]
        return text + rest


def opener(store: Store) -> Callable[[Job], Optional[LiveSource]]:
    """For ``follow``: the live source of a job's current attempt, if this host has its spool."""
    folder = spool_dir_for(store.url)

    def open_live(job: Job) -> Optional[LiveSource]:
        reader = SpoolReader.open(folder, job.id, job.attempts)
        return None if reader is None else LiveSource(reader, job.attempts)

    return open_live


def beyond(shown: str, stored: Optional[str]) -> str:
    """What the stored output of an attempt has after what the spool showed of it: nothing when
    the spool was complete (its end is the stored tail's end); the missing end when a worker
    died before its last writes reached the spool."""
    from queuectl.service.logtail import _leading_replacements, _longest_overlap, split_marker

    _, tail = split_marker(stored or "")
    tail = tail[_leading_replacements(tail) :]
    if not shown:
        return tail
    if not tail or shown.endswith(tail) or tail.endswith(shown):
        return ""
    overlap = _longest_overlap(shown, tail)
    return tail[overlap:] if overlap is not None else ""
