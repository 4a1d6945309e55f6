"""Settling: when a job finishes, the jobs waiting on it are released or cancelled (transitively),
written once for every store. Each step is a guarded update of a waiting job, so settling twice
changes nothing the second time, and a crash between steps is repaired by settling again."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable

from queuectl.core.errors import StoreReadOnly, StoreUnavailable
from queuectl.core.lifecycle import events
from queuectl.core.lifecycle.rules import FINISHED, blocked_by, ending_changes, parents_of
from queuectl.core.models import CANCELLED, COMPLETED, DEAD, PENDING, WAITING, Job

if TYPE_CHECKING:
    from queuectl.store.base import Store


def _may_start(store: Store, child: Job) -> bool:
    """Every parent ended the way ``child`` needs. A parent that is gone was purged, which only
    happens to a finished job: it counts as having ended that way."""
    states = store.job_states(parents_of(child))
    if any(states.get(parent, COMPLETED) != COMPLETED for parent in child.after):
        return False
    return not child.on_failure_of or states.get(child.on_failure_of, DEAD) in (DEAD, CANCELLED)


def settle(store: Store, job_id: str, state: str, now: float) -> int:
    """A job just finished in ``state``: release, or cancel (transitively), the jobs waiting on it.

    Returns how many became pending. Runs inside the caller's unit of work; each step is a
    guarded update of a waiting job, so settling twice changes nothing the second time.
    """
    return settle_within(store, job_id, state, now, None)[0]


def settle_within(store: Store, job_id: str, state: str, now: float, deadline: float | None) -> tuple[int, bool]:
    """:func:`settle`, stopping at ``deadline`` (monotonic; None: never); returns how many were
    released and whether it got through. Stopping midway is safe without transactions: what is
    left still waits (the next settle goes on from there) and each cancelled child carries its
    own outbox mark, so a parent with 10,000 children never blocks a worker's heartbeats."""
    released = 0
    todo = [(job_id, state)]
    marked = not store.transactional  # a cancelled child carries an outbox mark of its own
    while todo:
        parent, parent_state = todo.pop()
        for child in store.waiting_children(parent):
            if deadline is not None and time.monotonic() > deadline:
                return released, False
            reason = blocked_by(child, parent, parent_state)
            if reason is not None:
                cancelled = events.cancelled(child, now, reason)
                if store.update_job(
                    child.id, ending_changes(CANCELLED, now, reason), states=(WAITING,), events=[cancelled]
                ):
                    todo.append((child.id, CANCELLED))
            elif _may_start(store, child):
                released += store.update_job(
                    child.id,
                    {"state": PENDING, "run_at": max(child.run_at, now), "updated_at": now},
                    states=(WAITING,),
                    events=[events.state_event(events.RELEASED, child, now, PENDING, after=parent)],
                )
        if marked and parent != job_id:
            store.mark_settled(parent, now)  # its own dependants are settled now
    return released, True


def resettle(store: Store, waiting: Iterable[Job], now: float) -> int:
    """Settle again the given waiting jobs against parents that have finished.

    Needed where a parent's outcome and its settling are not one transaction (MongoDB): a
    worker dying between them, or a parent finishing while its child was still being inserted,
    leaves a child waiting for a parent that has already ended.
    """
    released = 0
    for child in waiting:
        for parent, parent_state in store.job_states(parents_of(child)).items():
            if parent_state in FINISHED:
                released += settle(store, parent, parent_state, now)
    return released


def resettle_waiting(store: Store, now: float, before: float | None = None, limit: int = 1000) -> float | None:
    """Resettle one page of waiting jobs, newest first from ``before``; returns where the next
    page starts (None: the list is done), so a long list is covered over several passes."""
    page = store.list_jobs(state=WAITING, limit=limit, before=before)
    resettle(store, page, now)
    return page[-1].created_at if len(page) == limit else None


MAX_PAGES = 10  # pages of marked jobs one repair pass settles (heartbeats must go on meanwhile)
SETTLE_GRACE_S = 10.0  # a mark younger than this is left to the worker that is settling it now
INLINE_SETTLE_S = 0.5  # a worker settles after an outcome this long at most, then leaves it to repair
REPAIR_BUDGET_S = 1.0  # one repair pass settles this long at most


def settle_finished(store: Store, job_id: str, state: str, at: float) -> int:
    """Settle after an outcome written at ``at``. On a SQL store: in its transaction. Without
    transactions the outcome's write marked the job (outbox); settling clears the mark, and an
    outage or a long list of dependants is no failure of the outcome: the mark stays, and the
    repair pass settles the rest."""
    if store.transactional:
        return settle(store, job_id, state, at)
    try:
        released, done = settle_within(store, job_id, state, at, time.monotonic() + INLINE_SETTLE_S)
        if done:
            store.mark_settled(job_id, at)
    except (StoreUnavailable, StoreReadOnly):
        return 0
    return released


def settle_marked(store: Store, now: float, grace: float = SETTLE_GRACE_S, budget: float = REPAIR_BUDGET_S) -> int:
    """Settle the dependants of finished jobs whose mark is older than ``grace`` (their worker
    died, lost the store, or ran out of time between outcome and settling), then clear the
    marks; for ``budget`` seconds at most. Idempotent."""
    released = 0
    deadline = time.monotonic() + budget
    for _ in range(MAX_PAGES):
        page = store.unsettled(now - grace)
        for job_id, state, mark in page:
            done = True
            if state in FINISHED:
                freed, done = settle_within(store, job_id, state, now, deadline)
                released += freed
            if not done:
                return released
            store.mark_settled(job_id, mark)
        if not page:
            break
    return released
