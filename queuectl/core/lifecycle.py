"""The rules of a job's life, written once for every store and every front end.

What is decided here and nowhere else: which states can be claimed, are finished, hold a unique
key or can be cancelled; what an attempt's end leads to (a retry at ``backoff_base ** n`` capped
by ``backoff_max``, or the dead letter queue); the state a new job with parents starts in; how
the jobs waiting on a finished job are settled (released or cancelled, transitively); when an
on-finish hook falls due; what a DLQ retry resets.

The transitions below work through the store's primitives (:class:`~queuectl.store.base.Store`:
a unit of work, insert, claim, a guarded update, get/find, children). On a SQL store a unit is
one transaction, so a transition and all its follow-ups commit together. On MongoDB each
primitive is one single-document atomic update; the follow-ups are idempotent and any worker
repairs what a crash between them left (:func:`resettle_waiting`).

Nothing here imports a store or the CLI: the store is passed in, and every time is the caller's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from queuectl.core.errors import Conflict, InvalidInput, NotFound, UniqueKeyTaken
from queuectl.core.models import (
    CANCELLED,
    COMPLETED,
    DEAD,
    FAILED,
    PENDING,
    PROCESSING,
    WAITING,
    Job,
    Lease,
    Outcome,
)

if TYPE_CHECKING:
    from queuectl.core.config import RuntimeConfig
    from queuectl.store.base import Store

# --- the state table -----------------------------------------------------------------------------

CLAIMABLE = (PENDING, FAILED)  # a worker may take these once run_at has come
FINISHED = (COMPLETED, DEAD, CANCELLED)  # nothing more happens to these (but a DLQ retry of dead)
KEY_HOLDING = (PENDING, WAITING, PROCESSING, FAILED)  # a unique key is taken while its job is in these
CANCELLABLE = (PENDING, WAITING, PROCESSING, FAILED)  # everything not finished

HOOK_DUE = "due"  # the on-finish hook waits for a worker to run it
HOOK_RUNNING = "running"
HOOK_DONE = "done"
HOOK_FAILED = "failed"

AFTER = "after"  # a dependency kind: run once the parent completed
ON_FAILURE = "on_failure"  # compensation: run once the parent ended dead or cancelled


class WhenHooked:
    """A change value meaning "set this field to ``value`` if the job has an on-finish hook".

    A SQL store writes it in the same statement as the rest (a ``CASE``); MongoDB in a second,
    conditional write right after the first (see its store for what a crash between them costs).
    """

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"WhenHooked({self.value!r})"


HOOK_FALLS_DUE = WhenHooked(HOOK_DUE)


def is_due(changes: dict[str, Any]) -> bool:
    """Whether a job left by ``changes`` (a state change, stamped ``updated_at``) may be claimed
    at once: claimable and its ``run_at`` reached. A store keeps this as its due flag, so that
    claims walk only due jobs; a job not due yet is promoted by the claim once its time comes."""
    run_at = changes.get("run_at")
    return is_due_at(changes["state"], run_at, changes.get("updated_at", run_at))


def is_due_at(state: str, run_at: float | None, now: float | None) -> bool:
    """A job in ``state`` with ``run_at`` may be claimed at ``now``."""
    return state in CLAIMABLE and run_at is not None and now is not None and run_at <= now


# --- the outcome of an attempt -------------------------------------------------------------------


def retry_delay(attempts: int, config: RuntimeConfig) -> float:
    """``backoff_base ** attempts`` seconds, capped at ``backoff_max``."""
    try:
        delay = float(config.backoff_base) ** attempts
    except OverflowError:
        delay = config.backoff_max
    return min(delay, config.backoff_max)


def failure_outcome(
    job: Job,
    config: RuntimeConfig,
    now: float,
    error: str,
    exit_code: int | None = None,
    output: str | None = None,
    duration: float | None = None,
) -> Outcome:
    """A failed attempt: retry later (``failed`` with a new run_at), or ``dead`` when out of retries."""
    if job.attempts > job.max_retries:
        return Outcome(DEAD, now, exit_code=exit_code, last_error=error, output=output, duration=duration)
    return Outcome(
        FAILED,
        now,
        run_at=now + retry_delay(job.attempts, config),
        exit_code=exit_code,
        last_error=error,
        output=output,
        duration=duration,
    )


def success_outcome(now: float, output: str | None, duration: float | None) -> Outcome:
    return Outcome(COMPLETED, now, exit_code=0, output=output, duration=duration)


def shutdown_outcome(job: Job, now: float, output: str | None, duration: float | None) -> Outcome:
    """A run stopped by a worker's shutdown did not fail: back to pending, the claim's count undone."""
    return Outcome(
        PENDING,
        now,
        run_at=now,
        attempts=job.attempts - 1,
        output=output,
        last_error="interrupted by a worker shutdown; requeued",
        duration=duration,
    )


def outcome_changes(outcome: Outcome) -> dict[str, Any]:
    """The fields an attempt's end writes (fields left as None in the outcome keep their value)."""
    final = outcome.state in FINISHED
    changes: dict[str, Any] = {
        "state": outcome.state,
        "exit_code": outcome.exit_code,
        "last_error": outcome.last_error,
        "finished_at": outcome.at if final else None,
        "duration": outcome.duration,
        "updated_at": outcome.at,
        "locked_by": None,
        "lease_expires_at": None,
    }
    for name in ("run_at", "output", "attempts"):
        value = getattr(outcome, name)
        if value is not None:
            changes[name] = value
    if final:
        changes["hook_state"] = HOOK_FALLS_DUE
    return changes


def ending_changes(state: str, now: float, error: str | None = None) -> dict[str, Any]:
    """The fields written when a job is ended from outside an attempt (cancelled, never needed)."""
    changes: dict[str, Any] = {
        "state": state,
        "finished_at": now,
        "updated_at": now,
        "locked_by": None,
        "lease_expires_at": None,
        "hook_state": HOOK_FALLS_DUE,
    }
    if error is not None:
        changes["last_error"] = error
    return changes


# --- dependencies ---------------------------------------------------------------------------------


def parents_of(job: Job) -> list[str]:
    return [*job.after, *([job.on_failure_of] if job.on_failure_of else [])]


def start_state(job_id: str, after: dict[str, str | None], failure_parent: tuple[str, str | None] | None) -> str:
    """The state a new job with parents starts in (``waiting`` or ``pending``), or why it can't exist.

    ``after`` maps each parent id to its state (None: no such job); ``failure_parent`` is the
    compensation parent and its state. A job can only name parents that already exist, so a
    cycle can never be built.
    """
    for parent, state in after.items():
        if state is None:
            raise InvalidInput(f"after: there is no job {parent!r} (a job can only wait for existing jobs)")
        if state in (DEAD, CANCELLED):
            raise Conflict(f"parent job {parent} already ended {state}, so job {job_id} could never run")
    waiting = any(state != COMPLETED for state in after.values())
    if failure_parent is not None:
        parent, state = failure_parent
        if state is None:
            raise InvalidInput(f"on_failure_of: there is no job {parent!r}")
        if state == COMPLETED:
            raise Conflict(f"job {parent} already completed, so its compensation step would never run")
        waiting = waiting or state not in (DEAD, CANCELLED)
    return WAITING if waiting else PENDING


def _blocked_by(child: Job, parent: str, parent_state: str) -> str | None:
    """Why ``child`` can never run now that ``parent`` ended in ``parent_state`` (None: it still
    may). A child may name one parent both ways (after it, and as its compensation): then it can
    never run at all, and whichever edge the parent's end breaks says why."""
    if parent in child.after and parent_state != COMPLETED:
        return f"parent job {parent} ended {parent_state}"
    if child.on_failure_of == parent and parent_state == COMPLETED:
        return f"not needed: {parent} completed"
    return None


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
    released = 0
    todo = [(job_id, state)]
    while todo:
        parent, parent_state = todo.pop()
        for child in store.waiting_children(parent):
            reason = _blocked_by(child, parent, parent_state)
            if reason is not None:
                if store.update_job(child.id, ending_changes(CANCELLED, now, reason), states=(WAITING,)):
                    todo.append((child.id, CANCELLED))
            elif _may_start(store, child):
                released += store.update_job(
                    child.id,
                    {"state": PENDING, "run_at": max(child.run_at, now), "updated_at": now},
                    states=(WAITING,),
                )
    return released


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


# --- the transitions -----------------------------------------------------------------------------


def enqueue_job(store: Store, job: Job) -> None:
    """Insert one job (see :func:`enqueue`)."""
    enqueue(store, [job])


def enqueue(store: Store, jobs: Iterable[Job], now: float | None = None) -> int:
    """Insert every job or none; a job with parents starts waiting or pending as they allow.

    ``now`` (default: the time the insert ended) stamps any child settled right after it.

    Parents may be earlier jobs of the same batch. Conflict for a taken id or unique key.
    Returns how many were inserted, and wakes idle workers once, after the commit.
    """
    waiting: list[str] = []

    def with_start_states() -> Iterator[Job]:
        for job in jobs:
            if job.after or job.on_failure_of:
                states: dict[str, str | None] = dict(store.job_states(parents_of(job)))
                failure = (job.on_failure_of, states.get(job.on_failure_of)) if job.on_failure_of else None
                job.state = start_state(job.id, {p: states.get(p) for p in job.after}, failure)
                if job.state == WAITING:
                    waiting.append(job.id)
            yield job

    with store.unit():
        count = store.insert_jobs(with_start_states())
    if waiting and not store.transactional:
        now = time.time() if now is None else now
        resettle(store, (job for job in map(store.get, waiting) if job and job.state == WAITING), now)
    if count:
        store.notify()
    return count


def finish(store: Store, lease: Lease, outcome: Outcome, expired_before: float | None = None) -> bool:
    """Record the end of an attempt, fenced on the lease (id, worker, attempt, processing).

    With ``expired_before``, also require the lease to have ended by then (recovering another
    worker's job). Returns False, writing nothing, when the lease no longer holds.
    """
    with store.unit():
        written, released = _finish_in(store, lease, outcome, expired_before)
    if released:
        store.notify()
    return written


def _finish_in(store: Store, lease: Lease, outcome: Outcome, expired_before: float | None) -> tuple[bool, int]:
    written = store.update_job(lease.job_id, outcome_changes(outcome), lease=lease, expired_before=expired_before)
    if written and outcome.state in FINISHED:
        return True, settle(store, lease.job_id, outcome.state, outcome.at)
    return written, 0


LOCK_WAIT_NOTICED_S = 0.05  # a wait for the write lock longer than this moves lease times on


def _lock_wait(started: float) -> float:
    """Seconds spent getting the unit's write lock since ``started`` (monotonic), if they matter.

    Lease times are ``now + lease``: computed before a long wait for the lock, a renewal would
    be written already expired and another worker would take over a live job.
    """
    waited = time.monotonic() - started
    return waited if waited > LOCK_WAIT_NOTICED_S else 0.0


def claim(store: Store, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int) -> list[Job]:
    """Take up to ``limit`` due jobs; the lease runs from when the write lock was had."""
    started = time.monotonic()
    with store.unit():
        return store.claim(worker_id, queues, now + _lock_wait(started), lease, limit)


def finish_and_claim(
    store: Store,
    outcomes: list[tuple[Lease, Outcome]],
    worker_id: str,
    queues: list[str] | None,
    now: float,
    lease: float,
    limit: int,
) -> tuple[list[bool], list[Job]]:
    """The busy worker's round trip: every outcome and the next claim in one unit of work."""
    released = 0
    started = time.monotonic()
    with store.unit():
        now += _lock_wait(started)
        written = []
        for held, outcome in outcomes:
            ok, freed = _finish_in(store, held, outcome, None)
            written.append(ok)
            released += freed
        claimed = store.claim(worker_id, queues, now, lease, limit) if limit > 0 else []
    if released:
        store.notify()
    return written, claimed


def heartbeat(
    store: Store, worker_id: str, beats: list[tuple[Lease, str | None]], now: float, lease: float
) -> set[str]:
    """Extend the lease of each held job (and save its output so far, when given).

    ``worker_id`` is the beating worker (each lease names it too). Fenced: only a job still
    processing under the same worker and attempt is touched. Returns
    the ids whose lease is gone (recovered, cancelled, taken over): their runs must be stopped.
    """
    lost: set[str] = set()
    if not beats:
        return lost
    started = time.monotonic()
    with store.unit():
        now += _lock_wait(started)
        for held, output in beats:
            changes: dict[str, Any] = {"lease_expires_at": now + lease}
            if output is not None:
                changes["output"] = output
            if not store.update_job(held.job_id, changes, lease=held):
                lost.add(held.job_id)
    return lost


def recover_expired(store: Store, config: RuntimeConfig, now: float) -> list[str]:
    """Give back the jobs of workers presumed dead (lease expired), counted as failed attempts.

    Fenced on the lease and on its expiry, so a worker that heartbeats in between keeps its job.
    A pass that had to wait longer than a heartbeat for the write lock stops there: while the
    lock was held by someone else (a huge bulk enqueue), live workers could not renew their
    leases either, so an expiry seen before the wait proves nothing. The next pass looks again.
    """
    recovered = []
    for job in store.expired(now):
        assert job.locked_by is not None
        held = Lease(job.id, job.locked_by, job.attempts)
        error = f"lease expired: worker {job.locked_by} stopped heartbeating (presumed dead)"
        started = time.monotonic()
        with store.unit():
            if time.monotonic() - started > config.heartbeat:
                break
            written, _ = _finish_in(store, held, failure_outcome(job, config, now, error), now)
        if written:
            recovered.append(job.id)
    if recovered:
        store.notify()
    return recovered


def cancel(store: Store, job_id: str, now: float) -> Job:
    """Cancel a job that has not finished and settle the jobs waiting on it; returns it.

    A processing job's worker sees its lease gone at its next heartbeat and kills the run.
    NotFound for an unknown id; Conflict for a job that already finished.
    """
    with store.unit():
        job = store.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        if job.state not in CANCELLABLE or not store.update_job(
            job_id, ending_changes(CANCELLED, now), states=CANCELLABLE
        ):
            latest = store.get(job_id)
            raise Conflict(
                f"job {job_id} already finished ({latest.state if latest else job.state}); nothing to cancel"
            )
        released = settle(store, job_id, CANCELLED, now)
        cancelled = store.get(job_id)
    if released:
        store.notify()
    assert cancelled is not None
    return cancelled


def retry_dead(store: Store, job_id: str | None, now: float) -> int:
    """Move one dead job (or, with None, all of them) back to pending with attempts reset.

    Atomic per job: of many concurrent retries of one job exactly one returns 1. NotFound for
    an unknown id; Conflict if that job is not dead, or its unique key is held meanwhile.
    """
    reset = {
        "state": PENDING,
        "attempts": 0,
        "run_at": now,
        "updated_at": now,
        "finished_at": None,
        "locked_by": None,
        "lease_expires_at": None,
    }
    with store.unit():
        if job_id is None:
            try:
                count = store.update_jobs(reset, states=(DEAD,))
            except UniqueKeyTaken:
                raise Conflict(
                    "a dead job's unique key is taken by an active job; retry it once that one has finished"
                ) from None
        else:
            try:
                count = int(store.update_job(job_id, reset, states=(DEAD,)))
            except UniqueKeyTaken:
                raise Conflict(
                    f"job {job_id}'s unique key is taken by an active job; retry it once that one has finished"
                ) from None
        if count == 0 and job_id is not None:
            job = store.get(job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            raise Conflict(f"job {job_id} is {job.state}, not in the dead letter queue")
    if count:
        store.notify()
    return count


def claim_hook(store: Store, now: float) -> Job | None:
    """Take one job whose on-finish hook is due (it then runs at most once) and return it."""
    for job in store.hooks_due(limit=4):
        if store.update_job(job.id, {"hook_state": HOOK_RUNNING}, hook_state=HOOK_DUE):
            job.hook_state = HOOK_RUNNING
            return job
    return None


def finish_hook(store: Store, job_id: str, error: str | None, now: float) -> None:
    """Record a hook's result: done, or failed with ``error``. Never changes the job's state."""
    store.update_job(job_id, {"hook_state": HOOK_FAILED if error else HOOK_DONE, "hook_error": error})
