"""What the end of a held job's run means (runtime/slots.py): the outcome a worker records.

A pure function of the slot's facts, so each way a run can end is checked here without a worker
loop; the worker's own tests (test_worker_*, the reliability suite) cover the loop around it.
"""

from __future__ import annotations

import os
import time

import pytest

from queuectl.core.config import RuntimeConfig
from queuectl.core.models import (
    DEAD,
    ENDED_NOT_STARTED,
    ENDED_SHUTDOWN,
    ENDED_TIMEOUT,
    FAILED,
    PENDING,
    PROCESSING,
    Job,
    Lease,
)
from queuectl.runtime.executor import Run
from queuectl.runtime.slots import Slot, outcome_of

NOW = 2000.0


def held(command: str = "true", attempts: int = 1, max_retries: int = 3) -> Slot:
    job = Job(
        id="j1", command=command, state=PROCESSING, attempts=attempts, max_retries=max_retries, started_at=NOW - 5
    )
    return Slot(job, Lease(job.id, "w1", attempts), None, started_at=NOW - 4)


def ran(slot: Slot, tmp_path: os.PathLike[str]) -> int:
    """Run the slot's command to its end, as the worker would, and return its wait code."""
    slot.run = Run(slot.job.command, str(tmp_path), dict(os.environ))
    deadline = time.monotonic() + 10
    while (code := slot.run.poll()) is None:
        assert time.monotonic() < deadline, "the command did not end"
        slot.run.read()
        time.sleep(0.01)
    slot.run.read()
    slot.run.finish()
    return code


def test_a_lost_lease_records_nothing() -> None:
    slot = held()
    slot.stop_reason = "lost"
    assert outcome_of(slot, None, RuntimeConfig(), NOW, "h") is None


def test_a_job_handed_back_for_the_workers_own_want_is_pending_again_uncounted() -> None:
    slot = held(attempts=2)
    slot.handed_back, slot.start_error = True, "too many open files"
    outcome = outcome_of(slot, None, RuntimeConfig(), NOW, "h")
    assert outcome is not None
    assert (outcome.state, outcome.attempts, outcome.ended) == (PENDING, 1, ENDED_NOT_STARTED)
    assert "too many open files" in (outcome.last_error or "")
    assert outcome.started_at is None and outcome.pid is None  # nothing ran


def test_a_command_that_cannot_start_is_a_failed_attempt() -> None:
    slot = held(attempts=1, max_retries=3)
    slot.start_error = "no such directory: /nope"
    outcome = outcome_of(slot, None, RuntimeConfig(), NOW, "h")
    assert outcome is not None
    assert (outcome.state, outcome.ended) == (FAILED, ENDED_NOT_STARTED)
    assert outcome.last_error == "no such directory: /nope"
    assert outcome.run_at is not None and outcome.run_at > NOW  # a retry, after a backoff


def test_the_last_failure_goes_to_the_dead_letter_queue(tmp_path: os.PathLike[str]) -> None:
    slot = held("exit 3", attempts=4, max_retries=3)
    code = ran(slot, tmp_path)
    outcome = outcome_of(slot, code, RuntimeConfig(), NOW, "host-a")
    assert outcome is not None
    assert (outcome.state, outcome.exit_code, outcome.last_error) == (DEAD, 3, "exit code 3")
    assert (outcome.host, outcome.claimed_at, outcome.started_at) == ("host-a", NOW - 5, NOW - 4)
    assert outcome.pid == slot.run.pid  # type: ignore[union-attr]


@pytest.mark.parametrize(("reason", "ended"), [("timeout", ENDED_TIMEOUT), ("shutdown", ENDED_SHUTDOWN)])
def test_a_run_we_stopped_says_why(tmp_path: os.PathLike[str], reason: str, ended: str) -> None:
    slot = held("kill -TERM $$", attempts=1)
    slot.job.timeout = 1.0
    slot.stop_reason = reason
    code = ran(slot, tmp_path)
    outcome = outcome_of(slot, code, RuntimeConfig(), NOW, "h")
    assert outcome is not None
    assert outcome.ended == ended and outcome.signal == 15
    if reason == "timeout":
        assert outcome.state == FAILED and "timeout" in (outcome.last_error or "")
    else:  # a shutdown is not the job's fault: it runs again, its attempt not counted
        assert (outcome.state, outcome.attempts) == (PENDING, 0)


def test_success_keeps_the_output_and_the_configured_history(tmp_path: os.PathLike[str]) -> None:
    slot = held("echo hello")
    code = ran(slot, tmp_path)
    outcome = outcome_of(slot, code, RuntimeConfig(attempt_outputs_kept=4), NOW, "h")
    assert outcome is not None
    assert (outcome.state, outcome.exit_code, outcome.keep_outputs) == ("completed", 0, 4)
    assert outcome.output == "hello\n"


@pytest.mark.parametrize("stopped", ["kill -TERM $$", "exit 143"])
def test_a_timeout_has_no_exit_code_and_is_retried_whatever_the_policy(
    tmp_path: os.PathLike[str], stopped: str
) -> None:
    """The README: "A timeout or a lost lease has no exit code and is always retried". The code
    a timed-out run ends with is the worker's SIGTERM (-15), or what the job's shell made of it
    (143): neither is the job's answer, so neither is recorded as one, nor judged by --retry-on."""
    slot = held(stopped, attempts=1, max_retries=3)
    slot.job.retry = {"retry_on": [75]}
    slot.stop_reason = "timeout"
    slot.job.timeout = 1.0
    code = ran(slot, tmp_path)
    outcome = outcome_of(slot, code, RuntimeConfig(), NOW, "h")
    assert outcome is not None
    assert (outcome.state, outcome.exit_code, outcome.ended) == (FAILED, None, ENDED_TIMEOUT)
    assert outcome.signal == (15 if code < 0 else None)
