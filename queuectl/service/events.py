"""The event log, read: the one place every front end (``queuectl events``, the HTTP API's
``GET /api/events``) reads events from, with a cursor by sequence number.

Following is gap-aware. On SQLite sequence numbers are assigned in commit order, so a reader
that has seen ``n`` will never see a number below it appear later. On MongoDB (numbers taken
at publishing) and PostgreSQL (sequences are not commit-ordered) a number can become visible
after a higher one, or never (a publisher that died). So a follower stops at a gap and waits
up to ``gap_wait`` seconds for it to fill before moving past it: it never prints an event
twice, never out of order, and misses one only if it took longer than that to appear.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from queuectl.core.config import RuntimeConfig
from queuectl.core.defaults import RETENTION_BATCH
from queuectl.core.durations import parse_duration
from queuectl.core.errors import InvalidInput
from queuectl.core.models import Event
from queuectl.store import Store

PAGE = 1000
GAP_WAIT_S = 2.0
TAIL = 100  # events shown without --since
# the largest sequence number any store holds or can compare with (SQLite INTEGER, PostgreSQL
# bigint, BSON int64): past it SQLite raises OverflowError rather than finding nothing
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Since:
    """Where reading starts: after a sequence number, or from a time (epoch seconds)."""

    seq: int | None = None
    at: float | None = None


def parse_since(text: str | None, now: float) -> Since | None:
    """``--since``: a sequence number (``1234``: the events after it) or an age (``10m``, ``2h``)."""
    if text is None:
        return None
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return Since(seq=parse_seq(text, "--since"))
    try:
        age = parse_duration(text, "--since")
    except InvalidInput:
        raise InvalidInput(
            f"--since {text!r}: give a sequence number (e.g. 1234) or an age such as 30s, 10m, 2h, 1d"
        ) from None
    return Since(at=now - age)


def parse_seq(text: str, name: str) -> int:
    """A client's sequence number (digits, checked by the caller) as an int, bounded here once
    for every front end (``--since``, ``?since=``, ``Last-Event-ID``) so no store sees one past 64 bits."""
    seq = int(text)
    if seq > MAX_SEQ:
        raise InvalidInput(
            f"{name} {text.strip()[:40]!r}: no event has a sequence number that large (at most {MAX_SEQ})"
        )
    return seq


def _matches(event: Event, job_id: str | None, queue: str | None) -> bool:
    return (job_id is None or event.job_id == job_id) and (queue is None or event.queue == queue)


def read_events(
    store: Store,
    since: Since | None = None,
    job_id: str | None = None,
    queue: str | None = None,
    limit: int | None = None,
) -> list[Event]:
    """Logged events, oldest first: after ``since`` (all of them, or the first ``limit``), or
    without it the newest ``limit`` (default :data:`TAIL`). No waiting at gaps: for that, follow."""
    if since is None:
        return store.read_events(0, limit or TAIL, job_id, queue, newest=True)
    found: list[Event] = []
    after = since.seq if since.seq is not None else seq_before(store, since.at or 0.0)
    while limit is None or len(found) < limit:
        want = PAGE if limit is None else min(PAGE, limit - len(found))
        page = store.read_events(after, want, job_id, queue)
        found.extend(page)
        if len(page) < want:
            break
        after = page[-1].seq
    return found


def last_seq(store: Store) -> int:
    """The newest sequence number logged (0: none), where a follower with no --since starts."""
    newest = store.read_events(0, 1, newest=True)
    return newest[-1].seq if newest else 0


def seq_before(store: Store, at: float) -> int:
    """The cursor just before the first event logged at ``at`` or later, found by bisecting
    sequence numbers (events are logged in time order, near enough; the log has no time index,
    which every event would have to write)."""
    first = store.read_events(0, 1)
    if not first:
        return 0
    low, high = first[0].seq, last_seq(store)  # the answer is in [low - 1, high]
    if first[0].at >= at:
        return low - 1
    while low < high:  # invariant: the event at or after `low` is older than `at`
        middle = (low + high + 1) // 2
        probe = store.read_events(middle - 1, 1)
        if probe and probe[0].at < at:
            low = probe[0].seq
        else:
            high = middle - 1
    return low


def start_of(store: Store, since: Since | None) -> int:
    """The cursor a follower starts after."""
    if since is None:
        return last_seq(store)
    if since.seq is not None:
        return since.seq
    return seq_before(store, since.at or 0.0)


class Cursor:
    """A gap-aware position in the log: :meth:`poll` returns the events logged after it that
    may be passed on now, each once and in sequence order, and moves past them.

    Reads the whole log by sequence (a filter cannot tell a gap from another job's event) and
    filters here; waits at a gap as the module says. It never blocks, so a loop that must not
    (the HTTP stream) polls it between its own waits; :func:`follow` is the blocking loop.
    """

    def __init__(
        self,
        after: int,
        job_id: str | None = None,
        queue: str | None = None,
        gap_wait: float = GAP_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seq, self.job_id, self.queue = after, job_id, queue
        self.gap_wait, self.clock = gap_wait, clock
        self.gap_seen: float | None = None
        self.more = False  # the last poll read a full page: read again without waiting

    def poll(self, store: Store) -> list[Event]:
        """The events after the cursor that can be passed on now (one page at most), read from
        ``store`` (the caller's: the HTTP server has one per thread)."""
        page = store.read_events(self.seq, PAGE)
        found: list[Event] = []
        for event in page:
            if event.seq != self.seq + 1:
                now = self.clock()
                if self.gap_seen is None:
                    self.gap_seen = now
                if now - self.gap_seen < self.gap_wait:
                    break  # a lower number may still appear: look again shortly
            self.gap_seen = None
            self.seq = event.seq
            if _matches(event, self.job_id, self.queue):
                found.append(event)
        self.more = len(page) == PAGE and self.gap_seen is None
        return found


def follow(
    store: Store,
    after: int,
    job_id: str | None = None,
    queue: str | None = None,
    interval: float = 0.2,
    gap_wait: float = GAP_WAIT_S,
    keep_going: Callable[[], bool] = lambda: True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Event]:
    """Yield every event after ``after`` in sequence order, as they are logged, each once
    (see :class:`Cursor`). Ends when ``keep_going()`` turns false."""
    cursor = Cursor(after, job_id, queue, gap_wait, clock)
    while keep_going():
        yield from cursor.poll(store)
        if not cursor.more:
            sleep(interval)


def apply_retention(store: Store, config: RuntimeConfig, now: float, max_batches: int | None = None) -> int:
    """Delete events older than ``retain-events`` (0: keep them), in batches (at most
    ``max_batches``); returns how many."""
    deleted = 0
    batches = 0
    while config.retain_events > 0 and (max_batches is None or batches < max_batches):
        purged = store.purge_events(now - config.retain_events, RETENTION_BATCH)
        deleted += purged
        batches += 1
        if purged < RETENTION_BATCH:
            break
    return deleted
