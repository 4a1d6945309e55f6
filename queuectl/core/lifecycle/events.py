"""What the event log and the attempt history say about each change, written once.

A transition hands the store the events (and, at an attempt's end, the attempt's row) to write
with the state change itself: in its transaction on SQL, in the same single-document update on
MongoDB (outbox: published into the log by any worker). So the log never claims a change that
did not happen, and never misses one that did. Pure values in, values out.
"""

from __future__ import annotations

from typing import Any

from queuectl.core.models import (
    CANCELLED,
    COMPLETED,
    DEAD,
    ENDED_COMPLETED,
    ENDED_FAILED,
    ENDED_LEASE_LOST,
    FAILED,
    PENDING,
    PROCESSING,
    Attempt,
    Event,
    Job,
    Lease,
    Outcome,
)

# the kinds of event
ENQUEUED = "enqueued"
RELEASED = "pending"  # a waiting job's parents are done: it may run now
DUE = "due"  # a delayed job's or a retry's run_at has passed: claims see it now
CLAIMED = "claimed"
PROGRESS = "progress"
COMPLETED_EVENT = "completed"
FAILED_EVENT = "failed"  # with the retry time
DEAD_EVENT = "dead"
CANCELLED_EVENT = "cancelled"
LEASE_LOST = "lease_lost"  # its worker stopped heartbeating: recovered (failed or dead)
REQUEUED = "requeued"  # handed back uncounted (a worker's shutdown, or short of resources)
RETRIED = "retried"  # from the dead letter queue
RESTARTED = "restarted"  # a finished job runs again, in place (its history kept)
SCHEDULE_FIRED = "schedule_fired"
WORKER_STARTED = "worker_started"
WORKER_STOPPED = "worker_stopped"
WORKER_UNRESPONSIVE = "worker_unresponsive"

KINDS = (
    ENQUEUED,
    RELEASED,
    DUE,
    CLAIMED,
    PROGRESS,
    COMPLETED_EVENT,
    FAILED_EVENT,
    DEAD_EVENT,
    CANCELLED_EVENT,
    LEASE_LOST,
    REQUEUED,
    RETRIED,
    RESTARTED,
    SCHEDULE_FIRED,
    WORKER_STARTED,
    WORKER_STOPPED,
    WORKER_UNRESPONSIVE,
)

_BY_STATE = {COMPLETED: COMPLETED_EVENT, FAILED: FAILED_EVENT, DEAD: DEAD_EVENT, PENDING: REQUEUED}


def job_event(kind: str, job: Job, at: float, state: str | None = None, **data: Any) -> Event:
    """An event about ``job`` (its state after the change: ``state``, else the job's own)."""
    return Event(kind, at, job.id, job.queue, state or job.state, {k: v for k, v in data.items() if v is not None})


def enqueued(job: Job) -> Event:
    """A job became visible (inserted; a bulk insert's jobs at its commit)."""
    return job_event(ENQUEUED, job, job.created_at, priority=job.priority or None)


def due(job_id: str, queue: str, state: str, run_at: float, at: float) -> Event:
    """A job that had to wait for its run_at joined the claimable ones (a claim promoted it)."""
    return Event(DUE, at, job_id, queue, state, {"run_at": run_at})


def claimed(job: Job, at: float) -> Event:
    """A worker took the job (its state is processing, its attempt counted)."""
    return job_event(CLAIMED, job, at, PROCESSING, worker=job.locked_by)  # as MongoDB can write it


def outcome_event(job_id: str, queue: str | None, lease: Lease, outcome: Outcome) -> Event:
    """The event of an attempt's end: completed, failed (with the retry time), dead, requeued
    or, for a recovery, lease lost."""
    kind = LEASE_LOST if outcome.ended == ENDED_LEASE_LOST else _BY_STATE.get(outcome.state, outcome.state)
    data: dict[str, Any] = {"worker": lease.worker_id, "attempt": lease.attempt}
    if outcome.state == FAILED:
        data["retry_at"] = outcome.run_at
    if outcome.exit_code is not None:
        data["exit_code"] = outcome.exit_code
    if outcome.last_error and outcome.state != COMPLETED:
        data["error"] = outcome.last_error
    return Event(kind, outcome.at, job_id, queue, outcome.state, data)


def ended_how(outcome: Outcome) -> str:
    if outcome.ended is not None:
        return outcome.ended
    return ENDED_COMPLETED if outcome.state == COMPLETED else ENDED_FAILED


def attempt_row(lease: Lease, outcome: Outcome) -> Attempt:
    """The history row of the attempt ``outcome`` ends (``number`` is the store's to assign)."""
    return Attempt(
        number=0,
        attempt=lease.attempt,
        worker=lease.worker_id,
        ended=ended_how(outcome),
        ended_at=outcome.at,
        claimed_at=outcome.claimed_at,
        started_at=outcome.started_at,
        host=outcome.host,
        pid=outcome.pid,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        duration=outcome.duration,
        error=outcome.last_error if outcome.state != COMPLETED else None,
        output=outcome.output,
        max_rss_kb=outcome.max_rss_kb,
        cpu_s=outcome.cpu_s,
    )


def state_event(kind: str, job: Job, at: float, state: str, **data: Any) -> Event:
    """A change from outside an attempt: released, cancelled, retried from the DLQ."""
    return job_event(kind, job, at, state, **data)


def cancelled(job: Job, at: float, reason: str | None = None) -> Event:
    return job_event(CANCELLED_EVENT, job, at, CANCELLED, reason=reason)


def worker_event(kind: str, worker_id: str, at: float, **data: Any) -> Event:
    return Event(kind, at, None, None, None, {"worker": worker_id, **{k: v for k, v in data.items() if v is not None}})
