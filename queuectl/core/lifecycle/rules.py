"""The state table and the pure rules: what an attempt's end leads to, the fields each change
writes, the state a new job with parents starts in, and when a waiting job is blocked for good.
No store here: every function is a value in, a value out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from queuectl.core.errors import Conflict, NotFound
from queuectl.core.models import (
    CANCELLED,
    COMPLETED,
    DEAD,
    FAILED,
    HELD,
    PENDING,
    PROCESSING,
    STAGED,
    WAITING,
    Job,
    Outcome,
)

if TYPE_CHECKING:
    from queuectl.core.config import RuntimeConfig

# --- the state table -----------------------------------------------------------------------------

CLAIMABLE = (PENDING, FAILED)  # a worker may take these once run_at has come
FINISHED = (COMPLETED, DEAD, CANCELLED)  # nothing more happens to these (but a DLQ retry of dead)
# a unique key is taken while its job is in these (a staged job holds it for the batch committing)
KEY_HOLDING = (PENDING, WAITING, HELD, PROCESSING, FAILED, STAGED)
CANCELLABLE = (PENDING, WAITING, HELD, PROCESSING, FAILED)  # everything not finished
HOLDABLE = (PENDING, FAILED, WAITING)  # a job not yet taken (a waiting one: release asks its parents again)
RESTARTABLE = FINISHED  # a restart runs a finished job again, in place (its old runs stay in its history)
RESTART_EDITS = ("command", "priority", "queue", "max_retries", "timeout")  # what a restart may change

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


def retry_delay(attempts: int, config: RuntimeConfig, job: Job | None = None, spread: float = 0.5) -> float:
    """``backoff_base ** attempts`` seconds (the job's own base and cap over the config's),
    spread by ``backoff_jitter`` (``spread`` is a random number in [0, 1): 0.5 is no change),
    capped at ``backoff_max``."""
    policy = job.retry if job is not None else {}
    base = policy.get("backoff_base", config.backoff_base)
    cap = policy.get("backoff_max", config.backoff_max)
    try:
        delay = float(base) ** attempts
    except OverflowError:
        delay = cap
    delay *= 1.0 + config.backoff_jitter * (2.0 * spread - 1.0)
    return min(delay, cap)


def retried(job: Job, exit_code: int | None) -> bool:
    """Whether the job's exit-code policy lets this failure be retried (a timeout or a signal,
    with no exit code, always may)."""
    if exit_code is None or exit_code < 0:
        return True
    if "retry_on" in job.retry:
        return exit_code in job.retry["retry_on"]
    return exit_code not in job.retry.get("no_retry_on", ())


def failure_outcome(
    job: Job,
    config: RuntimeConfig,
    now: float,
    error: str,
    exit_code: int | None = None,
    output: str | None = None,
    duration: float | None = None,
    spread: float | None = None,
) -> Outcome:
    """A failed attempt: retry later (``failed`` with a new run_at), or ``dead`` when out of
    retries or when the job's exit-code policy says not to retry this code. ``spread``: the
    jitter's random draw (None: drawn now)."""
    if job.attempts > job.max_retries or not retried(job, exit_code):
        if job.attempts <= job.max_retries:
            error = f"{error} (not retried: the job's exit-code policy)"
        return Outcome(DEAD, now, exit_code=exit_code, last_error=error, output=output, duration=duration)
    if spread is None:
        import random

        spread = random.random()
    return Outcome(
        FAILED,
        now,
        run_at=now + retry_delay(job.attempts, config, job, spread),
        exit_code=exit_code,
        last_error=error,
        output=output,
        duration=duration,
    )


def snooze_code(job: Job, config: RuntimeConfig) -> int:
    """The exit code that snoozes this job: its own (``--snooze-code``), else the config's (0: none)."""
    return int(job.retry.get("snooze_code", config.snooze_exit_code))


def snooze_outcome(job: Job, config: RuntimeConfig, now: float, output: str | None, duration: float | None) -> Outcome:
    """The job exited with its snooze exit code: back to pending after its ``snooze_delay`` (the
    job's own, else the config's), the claim's count undone (a snooze is not a failed attempt)."""
    delay = float(job.retry.get("snooze_delay", config.snooze_delay))
    code = snooze_code(job, config)
    return Outcome(
        PENDING,
        now,
        run_at=now + delay,
        attempts=job.attempts - 1,
        exit_code=code,
        last_error=f"snoozed (exit code {code}); runs again in {delay:g}s",
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


def handed_back_outcome(job: Job, now: float, reason: str) -> Outcome:
    """A job the worker could not even start for want of its own resources (no file descriptors,
    no processes left): not the job's fault, so back to pending with the claim's count undone."""
    return Outcome(PENDING, now, run_at=now, attempts=job.attempts - 1, last_error=f"{reason}; requeued")


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

    ``after`` maps each parent id to its state (None: no such job; a job staged by a bulk enqueue
    counts as none, see :mod:`.batches`); ``failure_parent`` is the
    compensation parent and its state. A job can only name parents that already exist, so a
    cycle can never be built.
    """
    for parent, state in after.items():
        if state is None or state == STAGED:  # staged: another bulk enqueue's, which may never commit
            raise NotFound(f"after: there is no job {parent!r} (a job can only wait for existing jobs)")
        if state in (DEAD, CANCELLED):
            raise Conflict(f"parent job {parent} already ended {state}, so job {job_id} could never run")
    waiting = any(state != COMPLETED for state in after.values())
    if failure_parent is not None:
        parent, state = failure_parent
        if state is None or state == STAGED:
            raise NotFound(f"on_failure_of: there is no job {parent!r}")
        if state == COMPLETED:
            raise Conflict(f"job {parent} already completed, so its compensation step would never run")
        waiting = waiting or state not in (DEAD, CANCELLED)
    return WAITING if waiting else PENDING


def blocked_by(child: Job, parent: str, parent_state: str) -> str | None:
    """Why ``child`` can never run now that ``parent`` ended in ``parent_state`` (None: it still
    may). A child may name one parent both ways (after it, and as its compensation): then it can
    never run at all, and whichever edge the parent's end breaks says why."""
    if parent in child.after and parent_state != COMPLETED:
        return f"parent job {parent} ended {parent_state}"
    if child.on_failure_of == parent and parent_state == COMPLETED:
        return f"not needed: {parent} completed"
    return None


def resumed_state(job: Job, parent_states: dict[str, str]) -> tuple[str, str | None]:
    """Where a job goes back to after a hold or a restart, from its parents' states *now*
    (``parent_states``: id -> state; a parent missing there was removed): ``pending``,
    ``waiting`` (a parent has not finished), or ``cancelled`` with why it can never run (the
    rule a waiting job's settling follows, :func:`blocked_by`)."""
    waiting = False
    for parent in parents_of(job):
        state = parent_states.get(parent)
        if state is None:
            return CANCELLED, f"parent job {parent} was removed"
        if state not in FINISHED:
            waiting = True
            continue
        reason = blocked_by(job, parent, state)
        if reason is not None:
            return CANCELLED, reason
    return (WAITING if waiting else PENDING), None
