"""Job state changes, for the HTTP event stream (``GET /api/events``) and the web page.

Read from the jobs themselves: the jobs updated since a cursor, through the (state, updated_at)
index, each in its current shape (what the page redraws). A job that changed twice between two
reads is reported once, in its latest state, and a purged job is not reported. The durable event
log (:mod:`queuectl.service.events`, ``queuectl events``) has every change; moving the stream
onto it is the next step (its events carry a sequence number, not the job's shape).
"""

from __future__ import annotations

from dataclasses import dataclass

from queuectl.core.errors import InvalidInput
from queuectl.core.models import Job
from queuectl.store import Store

BATCH = 200  # changes read at most per call


@dataclass(frozen=True)
class Cursor:
    """Where a reader is: the ``updated_at`` last seen and the (id, state) pairs seen at that time
    exactly (a later change at the same timestamp is still reported)."""

    at: float
    seen: frozenset[tuple[str, str]] = frozenset()

    def encode(self) -> str:
        return f"{self.at!r}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            at = float(text)
        except ValueError:
            raise InvalidInput(f"bad event cursor {text[:40]!r}: use the id of the last event received") from None
        if at != at or at < 0:
            raise InvalidInput("bad event cursor: not a time")
        return cls(at)


def changes(store: Store, cursor: Cursor, limit: int = BATCH) -> tuple[list[Job], Cursor]:
    """The jobs changed since ``cursor`` (oldest change first) and the cursor after them."""
    jobs = [job for job in store.changed_since(cursor.at, limit) if (job.id, job.state) not in cursor.seen]
    if not jobs:
        return [], cursor
    last = jobs[-1].updated_at
    seen = {(job.id, job.state) for job in jobs if job.updated_at == last}
    if last == cursor.at:
        seen |= cursor.seen
    return jobs, Cursor(last, frozenset(seen))
