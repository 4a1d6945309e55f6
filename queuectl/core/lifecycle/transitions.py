"""The transitions of a job's life over the store's primitives: enqueue, claim, heartbeat, finish
(and the busy path's finish + claim), recovery of expired leases, cancel, DLQ retry, hooks.

On a SQL store each transition is one unit of work (one transaction) with all its follow-ups.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from queuectl.core.errors import Conflict, NotFound, StoreReadOnly, StoreUnavailable, UniqueKeyTaken
from queuectl.core.lifecycle import batches, events
from queuectl.core.lifecycle.rules import (
    CANCELLABLE,
    FINISHED,
    HOOK_DONE,
    HOOK_DUE,
    HOOK_FAILED,
    HOOK_RUNNING,
    ending_changes,
    failure_outcome,
    outcome_changes,
    parents_of,
    start_state,
)
from queuectl.core.lifecycle.settling import SETTLE_GRACE_S, settle, settle_finished, settle_marked
from queuectl.core.models import (
    CANCELLED,
    DEAD,
    ENDED_CANCELLED,
    ENDED_LEASE_LOST,
    PENDING,
    PROCESSING,
    WAITING,
    Attempt,
    Event,
    Job,
    Lease,
    Outcome,
)

if TYPE_CHECKING:
    from queuectl.core.config import RuntimeConfig
    from queuectl.store.base import Store

# --- the transitions -----------------------------------------------------------------------------


def enqueue_job(store: Store, job: Job) -> None:
    """Insert one job (see :func:`enqueue`)."""
    enqueue(store, [job])


def enqueue(store: Store, jobs: Iterable[Job], now: float | None = None, batch: str | None = None) -> int:
    """Insert every job or none; a job with parents starts waiting or pending as they allow.

    ``now`` (default: the time the insert ended) stamps any child settled right after it.
    ``batch`` names the jobs of one bulk enqueue (``enqueue --file``): each job records it, and
    on a SQL store more jobs than one short transaction should hold are then staged in chunks
    and committed at one point (:mod:`.batches`) instead of holding the write lock throughout.

    Parents may be earlier jobs of the same call. Conflict for a taken id or unique key.
    Returns how many were inserted, and wakes idle workers once, after the commit.
    """
    waiting_on: set[str] = set()  # the parents of the jobs that start waiting
    known: dict[str, str] = {}  # parent states looked up already: one round trip per parent, not per child
    jobs = iter(jobs)
    chunked = batch if store.transactional else None  # the batch to stage the rest in, if long

    def with_start_states(jobs: Iterable[Job]) -> Iterator[Job]:
        for job in jobs:
            job.batch = batch
            if job.after or job.on_failure_of:
                unknown = [parent for parent in parents_of(job) if parent not in known]
                if unknown:
                    known.update(store.job_states(unknown))
                failure = (job.on_failure_of, known.get(job.on_failure_of)) if job.on_failure_of else None
                job.state = start_state(job.id, {p: known.get(p) for p in job.after}, failure)
                if job.state == WAITING:
                    waiting_on.update(parents_of(job))
            yield job

    more: Job | None = None
    with store.unit():
        count = store.insert_jobs(with_start_states(batches.first_part(jobs) if chunked else jobs))
        if chunked and (more := next(jobs, None)) is not None:
            batches.begin(store, chunked)
    if chunked and more is not None:
        return count + batches.enqueue_staged(store, chunked, itertools.chain([more], jobs), now)
    if waiting_on and not store.transactional:
        # a parent may have finished while its children were being inserted: settle it again
        now = store.now() if now is None else now
        try:
            for parent, state in store.job_states(sorted(waiting_on)).items():
                if state in FINISHED:
                    settle(store, parent, state, now)
        except (StoreUnavailable, StoreReadOnly):
            pass  # the jobs are in (committed): the repair pass resettles them later
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


def _finish_in(
    store: Store, lease: Lease, outcome: Outcome, expired_before: float | None, extra: list[Event] | None = None
) -> tuple[bool, int]:
    """The outcome, the attempt's history row and its event: one write (one transaction on SQL,
    one document update on MongoDB), then settling."""
    logged = [events.outcome_event(lease.job_id, None, lease, outcome), *(extra or ())]
    written = store.update_job(
        lease.job_id,
        outcome_changes(outcome),
        lease=lease,
        expired_before=expired_before,
        attempt=events.attempt_row(lease, outcome),
        keep_outputs=outcome.keep_outputs,
        events=logged,
    )
    if written and outcome.state in FINISHED:
        return True, settle_finished(store, lease.job_id, outcome.state, outcome.at)
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


Progress = tuple[float, "float | None", "str | None"]  # done, total, message


def heartbeat(
    store: Store,
    worker_id: str,
    beats: list[tuple[Lease, str | None]],
    now: float,
    lease: float,
    progress: dict[str, Progress] | None = None,
) -> set[str]:
    """Extend the lease of each held job (and save its output so far, when given).

    ``progress``: the latest progress a job reported since the last beat, saved with the
    renewal and logged as a ``progress`` event (so at most one per job and heartbeat).

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
            logged: list[Event] = []
            reported = progress.get(held.job_id) if progress else None
            if reported is not None:
                done, total, message = reported
                changes.update(progress_done=done, progress_total=total, progress_message=message, progress_at=now)
                data = {"done": done, "total": total, "message": message}
                logged.append(Event(events.PROGRESS, now, held.job_id, None, PROCESSING, data))
            if not store.update_job(held.job_id, changes, lease=held, events=logged):
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
    unresponsive: set[str] = set()
    for job in store.expired(now):
        assert job.locked_by is not None
        held = Lease(job.id, job.locked_by, job.attempts)
        error = f"lease expired: worker {job.locked_by} stopped heartbeating (presumed dead)"
        outcome = replace(
            failure_outcome(job, config, now, error, output=job.output),
            ended=ENDED_LEASE_LOST,
            claimed_at=job.started_at,
            keep_outputs=config.attempt_outputs_kept,
        )
        extra = []
        if job.locked_by not in unresponsive:  # once per worker and pass
            extra.append(events.worker_event(events.WORKER_UNRESPONSIVE, job.locked_by, now))
        started = time.monotonic()
        with store.unit():
            if time.monotonic() - started > config.heartbeat:
                break
            written, _ = _finish_in(store, held, outcome, now, extra)
        if written:
            recovered.append(job.id)
            unresponsive.add(job.locked_by)
    if recovered:
        store.notify()
    return recovered


_CANCEL_TRIES = 5


def _cancelled_run(job: Job, now: float) -> Attempt | None:
    """The history row of a run a cancel ends (its worker, its lease gone, writes nothing)."""
    if job.state != PROCESSING:
        return None
    return Attempt(0, job.attempts, job.locked_by, ENDED_CANCELLED, now, claimed_at=job.started_at, output=job.output)


def cancel(store: Store, job_id: str, now: float, on_running: Callable[[], None] | None = None) -> Job:
    """Cancel a job that has not finished and settle the jobs waiting on it; returns it.

    A processing job's worker sees its lease gone when it next renews its leases and kills the
    run: the workers are woken to renew now (on SQLite and PostgreSQL; MongoDB's wake-ups carry
    no stop, so there it is the next heartbeat). ``on_running`` is called instead of that wake
    when the job was running: a bulk cancel wakes the workers once for all its jobs. NotFound for
    an unknown id; Conflict for a job that already finished.
    """
    with store.unit():
        for _ in range(_CANCEL_TRIES):  # without transactions the job may change under us: look again
            job = store.get(job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            if job.state not in CANCELLABLE:
                raise Conflict(f"job {job_id} already finished ({job.state}); nothing to cancel")
            if store.update_job(
                job_id,
                ending_changes(CANCELLED, now),
                states=(job.state,),
                lease=Lease(job_id, job.locked_by or "", job.attempts) if job.state == PROCESSING else None,
                attempt=_cancelled_run(job, now),
                events=[events.cancelled(job, now)],
            ):
                break
        else:
            raise Conflict(f"job {job_id} keeps changing; try the cancel again")
        released = settle_finished(store, job_id, CANCELLED, now)
        cancelled = store.get(job_id)
    if job.state == PROCESSING and on_running is not None:
        on_running()  # the caller wakes the workers, once for many cancels
    elif job.state == PROCESSING:
        store.notify(stop=True)  # "look now": its worker renews, finds the lease gone, kills the run
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
                count = store.update_jobs(reset, states=(DEAD,), event=Event(events.RETRIED, now, state=PENDING))
            except UniqueKeyTaken:
                raise Conflict(
                    "a dead job's unique key is taken by an active job; retry it once that one has finished"
                ) from None
        else:
            try:
                retried = Event(events.RETRIED, now, job_id, None, PENDING)
                count = int(store.update_job(job_id, reset, states=(DEAD,), events=[retried]))
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


def repair(store: Store, now: float, grace: float = SETTLE_GRACE_S) -> int:
    """Resume the follow-ups a crash or an outage between steps left (stores without
    transactions): the store's own bookkeeping (bulk inserts), then the dependants of finished
    jobs still marked. Idempotent, safe from every worker at once; returns how much it did."""
    if store.transactional:
        return 0
    done = store.repair(now)
    released = settle_marked(store, now, grace)
    if released:
        store.notify()
    return done + released
