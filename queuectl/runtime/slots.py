"""A job a worker holds (:class:`Slot`) and what the end of its run means: the outcome to record
(:func:`outcome_of`) and the line a person reads about it (:func:`finished_line`).

The worker's loop (:mod:`queuectl.runtime.worker`) keeps the slots and watches their runs; the
rules an outcome follows (retry, backoff, dead letter, snooze) are :mod:`queuectl.core.lifecycle`'s.
Here only the facts of one run are turned into the lifecycle call that fits them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.lifecycle.rules import handed_back_outcome
from queuectl.core.models import ENDED_NOT_STARTED, ENDED_SHUTDOWN, ENDED_TIMEOUT, PENDING, Job, Lease, Outcome
from queuectl.runtime.executor import Run


@dataclass
class Slot:
    """A job this worker holds: its lease, its run, and why we stopped it (if we did)."""

    job: Job
    lease: Lease
    run: Run | None
    deadline: float | None = None  # monotonic time the job's timeout ends
    stop_reason: str | None = None  # timeout | shutdown | lost
    kill_at: float | None = None  # monotonic time SIGTERM turns into SIGKILL
    start_error: str | None = None
    handed_back: bool = False  # not started for want of the worker's own resources: requeue it
    output_unsaved: bool = False  # a heartbeat carrying its output failed: send it all next time
    started_at: float | None = None  # the store's time the command was started


def outcome_of(slot: Slot, code: int | None, config: RuntimeConfig, now: float, host: str) -> Outcome | None:
    """The outcome to record for a slot whose run ended with ``code`` (None: it never started),
    with what its history row says about the run; None when the job is no longer ours."""
    outcome = _bare_outcome(slot, code, config, now)
    if outcome is None:
        return None
    rss, cpu = slot.run.resources() if slot.run is not None else (None, None)
    ended = outcome.ended
    if slot.handed_back or slot.start_error is not None:
        ended = ENDED_NOT_STARTED
    elif slot.stop_reason == "shutdown":
        ended = ENDED_SHUTDOWN
    elif slot.stop_reason == "timeout":
        ended = ENDED_TIMEOUT
    return replace(
        outcome,
        ended=ended,
        claimed_at=slot.job.started_at,
        started_at=slot.started_at if slot.run is not None else None,
        host=host,
        pid=slot.run.pid if slot.run is not None else None,
        signal=-code if code is not None and code < 0 else None,
        max_rss_kb=rss,
        cpu_s=cpu,
        keep_outputs=config.attempt_outputs_kept,
    )


def _bare_outcome(slot: Slot, code: int | None, config: RuntimeConfig, now: float) -> Outcome | None:
    job = slot.job
    if slot.stop_reason == "lost":
        return None  # somebody else owns the job now: write nothing
    if slot.handed_back:
        return handed_back_outcome(job, now, f"not started: {slot.start_error}")
    if slot.start_error is not None:
        return lifecycle.failure_outcome(job, config, now, slot.start_error)
    assert slot.run is not None and code is not None
    output, duration = slot.run.output(), slot.run.elapsed
    if slot.stop_reason == "shutdown":
        return lifecycle.shutdown_outcome(job, now, output, duration)
    if slot.stop_reason == "timeout":
        error = f"timeout: still running after {job.timeout:g}s, process group killed"
        # no exit code: the code it ended with is our SIGTERM's (or what its shell made of it)
        return lifecycle.failure_outcome(job, config, now, error, None, output, duration)
    if code == 0:
        return lifecycle.success_outcome(now, output, duration)
    if code > 0 and code == lifecycle.snooze_code(job, config):
        return lifecycle.snooze_outcome(job, config, now, output, duration)
    error = f"exit code {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
    return lifecycle.failure_outcome(job, config, now, error, code, output, duration)


def finished_line(job_id: str, outcome: Outcome, now: float) -> str:
    """``job k3v9q2mx7d completed (exit code 0, ran 12ms)``: one log line per finished attempt."""
    from queuectl.core.durations import format_duration

    detail = []
    if outcome.exit_code is not None:
        detail.append(f"exit code {outcome.exit_code}")
    elif outcome.last_error:
        detail.append(outcome.last_error.splitlines()[0])
    if outcome.duration is not None:
        detail.append(f"ran {format_duration(outcome.duration)}")
    if outcome.state == "failed" and outcome.run_at is not None:
        detail.append(f"retry in {format_duration(max(0.0, outcome.run_at - now))}")
    state = "handed back" if outcome.state == PENDING else outcome.state
    return f"job {job_id} {state}" + (f" ({', '.join(detail)})" if detail else "")
