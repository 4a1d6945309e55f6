"""Follow a job's output: what to print when its stored tail changes.

A job's output is stored as a bounded tail (the last 64 KiB, with a ``[... N earlier bytes of
output dropped ...]`` marker once it was cut), saved by the worker at each heartbeat. So the new
text is not always the old text plus more: once the tail slides, the old text's end overlaps the
new text's start. :func:`new_part` finds that overlap, using the dropped-bytes count as a hint.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from queuectl.core.lifecycle import FINISHED
from queuectl.core.models import FAILED, PROCESSING, Job

SKIPPED = "[... output skipped ...]\n"
_DROPPED = re.compile(r"\A\[\.\.\. (\d+) earlier bytes of output dropped \.\.\.\]\n")
_MAX_CANDIDATES = 1000  # overlap positions tried before giving up (a marker is printed then)
_PROBE = 64  # characters of the new text searched for in the old one


def split_marker(text: str) -> tuple[int, str]:
    """``(bytes dropped before the tail, the tail)`` of a stored output."""
    match = _DROPPED.match(text)
    if match is None:
        return 0, text
    return int(match.group(1)), text[match.end() :]


def head_lines(text: str, count: int) -> str:
    """The first ``count`` lines of ``text`` (``head -n``), each with its newline."""
    return "".join(text.splitlines(keepends=True)[:count])


def tail_lines(text: str, count: int) -> str:
    """The last ``count`` lines of ``text`` (``tail -n``); a last line without newline counts."""
    if count <= 0:
        return ""
    lines = text.splitlines(keepends=True)
    return "".join(lines[-count:])


def stored_tail(text: str, count: int) -> str:
    """The last ``count`` lines of a stored output, its dropped-bytes marker left out (as
    :func:`excerpt` gives them): the marker is no line of the job's."""
    return tail_lines(split_marker(text)[1], count)


def excerpt(text: str | None, head: int | None, tail: int | None) -> tuple[str, int]:
    """``logs --head/--tail``: the lines asked for of a stored output (its dropped-bytes marker
    left out) and how many bytes the output limit dropped before the text kept."""
    dropped, kept = split_marker(text or "")
    if head is not None:
        return head_lines(kept, head), dropped
    if tail is not None:
        return tail_lines(kept, tail), dropped
    return text or "", dropped


def _overlap_by_hint(old: str, new: str, shift: int) -> Optional[str]:
    """The new part if the tail slid by exactly ``shift`` bytes (true for any valid UTF-8 output)."""
    old_b, new_b = old.encode(), new.encode()
    if shift < 0 or shift > len(old_b):
        return None
    kept = len(old_b) - shift
    if kept <= len(new_b) and old_b[shift:] == new_b[:kept]:
        return new_b[kept:].decode(errors="replace")
    return None


def _longest_overlap(old: str, new: str) -> Optional[int]:
    """The length of the longest suffix of ``old`` that is a prefix of ``new`` (> 0), or None."""
    if not old or not new:
        return None
    probe = new[:_PROBE]
    start, tries = max(0, len(old) - len(new)), 0
    while tries < _MAX_CANDIDATES:
        at = old.find(probe, start)
        if at < 0:
            break
        tries += 1
        if new.startswith(old[at:]):
            return len(old) - at
        start = at + 1
    # an overlap shorter than the probe: try those lengths directly, longest first
    for length in range(min(len(probe) - 1, len(old)), 0, -1):
        if new.startswith(old[-length:]):
            return length
    return None


def new_part(old: Optional[str], new: Optional[str]) -> str:
    """The text to print now that the stored output went from ``old`` (printed) to ``new``.

    When the two cannot be lined up (more output was written between two reads than the tail
    keeps) the result starts with ``[... output skipped ...]``.
    """
    if not new or new == old:
        return ""
    if not old:
        return new
    if new.startswith(old):
        return new[len(old) :]
    old_dropped, old_tail = split_marker(old)
    new_dropped, new_tail = split_marker(new)
    # a cut inside a multi-byte character leaves one U+FFFD per continuation byte: skip those
    old_cut, new_cut = _leading_replacements(old_tail), _leading_replacements(new_tail)
    old_clean, new_clean = old_tail[old_cut:], new_tail[new_cut:]
    shift = (new_dropped + new_cut) - (old_dropped + old_cut)
    if new_dropped >= old_dropped:
        by_hint = _overlap_by_hint(old_clean, new_clean, shift)
        if by_hint is not None:
            return by_hint
    length = _longest_overlap(old_clean, new_clean)
    if length is not None:
        return new_clean[length:]
    return SKIPPED + new_tail


def _leading_replacements(text: str) -> int:
    count = 0
    while count < 3 and text[count : count + 1] == "\ufffd":
        count += 1
    return count


@dataclass
class FollowEvent:
    """One thing to tell the user: ``text`` for stdout (the job's own output) or a ``note`` for stderr."""

    text: str = ""
    note: str = ""


class Follower:
    """Turns successive reads of one job into what ``logs --follow`` prints.

    A new run (a retry) is recognised by its new ``started_at``. Until its first heartbeat the
    stored output is still the previous run's, so that text is held back until it changes.
    """

    def __init__(self, job: Job) -> None:
        self.shown: Optional[str] = None
        self.started_at = job.started_at
        self.stale: Optional[str] = None  # the previous run's output, until the new run saves its own
        self.waiting_stale = False
        self.announced: set[tuple[Optional[float], str]] = set()

    def first(self, job: Job) -> list[FollowEvent]:
        """Everything stored so far."""
        self.shown = job.output
        events = [FollowEvent(text=job.output)] if job.output else []
        return events + self._notes(job)

    def update(self, job: Job) -> list[FollowEvent]:
        events: list[FollowEvent] = []
        if job.started_at != self.started_at and job.started_at is not None:
            self.started_at = job.started_at
            self.stale, self.waiting_stale = job.output if job.state == PROCESSING else None, True
            events.append(FollowEvent(note=f"attempt {job.attempts} of {job.max_retries + 1} started"))
        if self.waiting_stale:
            if job.state == PROCESSING and job.output == self.stale:
                return events
            self.waiting_stale, self.shown = False, None  # the new run's output, from its start
        text = new_part(self.shown, job.output)
        if text:
            events.append(FollowEvent(text=text))
        if job.output is not None:
            self.shown = job.output
        return events + self._notes(job)

    def adopt(self, job: Job, shown: str, attempt_over: bool) -> None:
        """Back to reading the database after a live spool: ``shown`` was printed of this attempt.

        If the attempt is over, its stored output is all printed; if it still runs (its spool
        failed: a full disk), the stored output is lined up with what the spool showed."""
        self.started_at = job.started_at
        self.stale, self.waiting_stale = None, False
        self.shown = job.output if attempt_over else shown

    def _notes(self, job: Job) -> list[FollowEvent]:
        key = (job.started_at, job.state)
        if key in self.announced:
            return []
        self.announced.add(key)
        if job.state == FAILED:
            why = job.last_error or "failed"
            retry = time.strftime("%H:%M:%S", time.localtime(job.run_at))
            return [FollowEvent(note=f"attempt {job.attempts} failed ({why}); retry at {retry}, still following")]
        return []


def final_note(job: Job) -> str:
    """The one line printed to stderr when ``logs --follow`` ends."""
    detail = []
    if job.exit_code is not None:
        detail.append(f"exit code {job.exit_code}")
    if job.duration is not None:
        from queuectl.core.durations import format_duration

        detail.append(f"ran {format_duration(job.duration)}")
    detail.append(f"attempt {job.attempts} of {job.max_retries + 1}")
    error = (job.last_error or "").strip().splitlines()[0] if (job.last_error or "").strip() else ""
    if job.state != "completed" and error and error not in detail:
        detail.append(error)
    return f"job {job.id} {job.state} ({', '.join(detail)})"


LIVE_READ_S = 0.05  # how often a live spool is read: output shows within this (plus a write)
SPOOL_LOOK_S = 0.25  # how often a running job's spool is looked for until it has one (its first output)
SPOOL_GONE_GRACE_S = 5.0  # a spool closed this long while its attempt still runs: it failed
ENDING_READ_S = 0.1  # how often the job is read while its ended spool waits for the outcome


def follow(
    read: Callable[[], Optional[Job]],
    write: Callable[[str], None],
    note: Callable[[str], None],
    interval: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    on_error: Optional[Callable[[Exception], bool]] = None,
    live: Optional[Callable[[Job], Any]] = None,
    tail: Optional[int] = None,
) -> Optional[Job]:
    """Print a job's output as it grows until it completed, died or was cancelled; returns it.

    ``read`` returns the job (None: it was deleted, then None is returned). ``on_error`` decides
    whether a failed read is retried (True) or raised. ``live(job)`` opens the running attempt's
    spool on this host (a :class:`~queuectl.service.livetail.LiveSource`, or None): its output is
    then printed as written, and the job read every ``interval`` only to see the attempt end.
    A worker creates the spool with the job's first output, so it is looked for until then.
    ``tail``: start with only the last N lines of what there is.
    """
    job = read()
    if job is None:
        return None
    follower = Follower(job)
    from_db: set[int] = set()  # attempts whose stored output was printed: no spool for those
    source = None
    try:
        source = _open_live(live, job, from_db)
        if source is not None:
            first = source.read()
            if tail is not None:  # the last lines of all the attempt wrote, not of the first read's MiB
                first = tail_lines(first, tail)
                while more := source.read():
                    first = tail_lines(first + more, tail)
            write_some(first, write)
        else:
            events = follower.first(job)
            if tail is not None:
                events = [FollowEvent(text=stored_tail(e.text, tail), note=e.note) for e in events]
            _printed(events, job, from_db)
            _emit(events, write, note)
        next_read = time.monotonic() + interval
        spool_gone: Optional[float] = None
        while job.state not in FINISHED:
            watching = live is not None and job.state == PROCESSING
            if not watching:
                sleep(interval)
            else:  # a live spool is read often; one that is not there yet (no output) looked for less
                sleep(LIVE_READ_S if source is not None else min(interval, SPOOL_LOOK_S))
            if source is not None:
                write_some(source.read(), write)
            elif watching:
                source = _open_live(live, job, from_db)
                if source is not None:  # this attempt from its start, from the spool
                    spool_gone = None
                    write_some(source.read(), write)
            just_ended = source is not None and spool_gone is None and source.ended()
            if watching and time.monotonic() < next_read and not just_ended:
                continue  # the database is read at once when the spool ends, else every interval
            # while an ended spool waits for its outcome, the database is read often (it comes at once)
            next_read = time.monotonic() + (min(interval, ENDING_READ_S) if spool_gone or just_ended else interval)
            try:
                latest = read()
            except Exception as exc:  # noqa: BLE001 - the caller decides which errors to ride out
                if on_error is not None and on_error(exc):
                    continue
                raise
            if latest is None:
                return None
            job = latest
            if source is not None:
                same = job.state == PROCESSING and job.attempts == source.attempt
                if same:
                    if not source.ended():
                        continue
                    # the worker closes the spool just before it records the outcome: wait for that;
                    # a spool closed long before (a full disk) while the job runs: read the database
                    spool_gone = spool_gone or time.monotonic()
                    if time.monotonic() - spool_gone < SPOOL_GONE_GRACE_S:
                        continue
                    from_db.add(job.attempts)
                write_some(source.close(), write)
                if not same and job.attempts == source.attempt:  # over: what the database kept beyond
                    from queuectl.service.livetail import beyond

                    write_some(beyond(source.shown, job.output), write)
                follower.adopt(job, source.shown, attempt_over=not same)
                source, spool_gone = None, None
                if not same:
                    _emit(follower._notes(job), write, note)
                continue
            events = follower.update(job)
            if job.state == PROCESSING and live is not None and job.attempts not in from_db:
                source = _open_live(live, job, from_db)
                if source is not None:  # the new attempt's own output comes from its spool
                    _emit([FollowEvent(note=e.note) for e in events if e.note], write, note)
                    write_some(source.read(), write)
                    continue
            _printed(events, job, from_db)
            _emit(events, write, note)
        return job
    finally:
        if source is not None:  # ended early: the client left, the job was deleted, a read failed
            source.drop()


def _printed(events: list[FollowEvent], job: Job, from_db: set[int]) -> None:
    """Note that the running attempt's output was printed from the database."""
    if job.state == PROCESSING and any(event.text for event in events):
        from_db.add(job.attempts)


def _open_live(live: Optional[Callable[[Job], Any]], job: Job, from_db: set[int]) -> Any:
    """The live source of the job's running attempt, unless its stored output was printed."""
    if live is None or job.state != PROCESSING or job.attempts in from_db:
        return None
    return live(job)


def write_some(text: str, write: Callable[[str], None]) -> None:
    if text:
        write(text)


def _emit(events: list[FollowEvent], write: Callable[[str], None], note: Callable[[str], None]) -> None:
    for event in events:
        if event.text:
            write(event.text)
        if event.note:
            note(event.note)
