"""A worker out of file descriptors (issue 11 #10): ``os.pipe()`` failing with EMFILE once crashed
it with a traceback, and each claimed job lost an attempt. Now a start that fails for want of the
worker's own resources hands the job back uncounted and the worker holds fewer jobs until one
ends; any other start failure is still a failed attempt."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.core import lifecycle
from queuectl.core.models import Job
from queuectl.runtime import executor
from queuectl.runtime import worker as worker_module
from queuectl.runtime.worker import Worker, WorkerOptions
from queuectl.service import config as config_service
from queuectl.store.sql.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(str(tmp_path / "q.db"))
    config_service.set_config(store, "heartbeat", "0.5")
    return store


def enqueue(store: SqliteStore, count: int, command: str) -> None:
    now = time.time()
    for n in range(count):
        job = Job(id=f"j{n}", command=command, created_at=now, updated_at=now, run_at=now + n * 1e-6)
        lifecycle.enqueue_job(store, job)


def pipes_fail_after(monkeypatch: pytest.MonkeyPatch, allowed: int, code: int) -> None:
    real_pipe = os.pipe
    calls = {"n": 0}

    def pipe() -> tuple[int, int]:
        calls["n"] += 1
        if calls["n"] > allowed:
            raise OSError(code, os.strerror(code))
        return real_pipe()

    monkeypatch.setattr(executor.os, "pipe", pipe)


def settle(worker: Worker, until: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        for slot in worker.slots.values():
            if slot.run is not None:
                slot.run.read()
        worker._reap()
        worker.next_write_try = 0.0
        worker._send_outcomes()
        time.sleep(0.01)


def test_out_of_descriptors_hands_the_jobs_back_uncounted_and_claims_less(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(store, 3, "sleep 0.3")
    worker = Worker(store, WorkerOptions(concurrency=3))
    # Given only one more pipe can be opened
    pipes_fail_after(monkeypatch, 1, errno.EMFILE)

    # When the worker claims three jobs
    worker._claim()

    # Then one runs, the other two go back to pending with their attempt undone (no traceback)
    assert sum(slot.run is not None for slot in worker.slots.values()) == 1
    settle(worker, lambda: len(worker.slots) == 1 and not worker.unsent)
    states = {job.id: (job.state, job.attempts) for job in store.list_jobs(limit=1000)}
    running = [job_id for job_id, (state, _) in states.items() if state == "processing"]
    assert len(running) == 1
    for job_id, (state, attempts) in states.items():
        if job_id not in running:
            assert (state, attempts) == ("pending", 0), states
            job = store.get(job_id)
            assert job is not None and job.last_error is not None and "requeued" in job.last_error
    # and it holds no more than it runs until that job ends
    assert worker._claim_limit() == 1
    assert not worker._may_claim(time.monotonic() + 5)

    # When descriptors are back and the running job ends, it claims again
    monkeypatch.undo()
    settle(worker, lambda: not worker.slots and not worker.unsent)
    assert worker._claim_limit() == 2
    worker.claim_after = 0.0
    assert worker._may_claim(time.monotonic())


def test_a_start_that_fails_for_another_reason_is_still_a_failed_attempt(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(store, 1, "true")
    worker = Worker(store, WorkerOptions())
    pipes_fail_after(monkeypatch, 0, errno.EIO)
    worker._claim()
    settle(worker, lambda: not worker.slots and not worker.unsent)
    job = store.get("j0")
    assert job is not None
    assert job.state == "failed" and job.attempts == 1
    assert worker.claim_cap is None


def test_a_burst_worker_with_few_descriptors_runs_every_job_once(tmp_path: Path) -> None:
    """``--concurrency 200`` under ``ulimit -n 48``: every job completes in its first attempt."""
    db = tmp_path / "q.db"
    store = SqliteStore(str(db))
    enqueue(store, 60, "sleep 0.2")
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_DB"] = f"sqlite:///{db}"

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    result = subprocess.run(
        [sys.executable, "-m", "queuectl.runtime.worker", "--burst", "--concurrency", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=few_descriptors,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    store = SqliteStore(str(db))
    jobs = store.list_jobs(limit=1000)
    assert len(jobs) == 60
    assert {(job.state, job.attempts) for job in jobs} == {("completed", 1)}, result.stderr[-2000:]


def test_a_worker_that_cannot_start_even_one_job_stops_and_says_why(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: it handed the job back and claimed it again every second, forever, uncounted."""
    enqueue(store, 1, "true")

    def no_descriptors(*args: object, **kwargs: object) -> None:
        raise executor.StartError("cannot open a pipe: Too many open files", errno.EMFILE)

    monkeypatch.setattr(worker_module, "Run", no_descriptors)
    worker = Worker(store, WorkerOptions(burst=True))
    started = time.monotonic()
    assert worker.run() == 1
    assert time.monotonic() - started < 30
    job = store.get("j0")
    assert job is not None and (job.state, job.attempts) == ("pending", 0)  # back for other workers
    err = capsys.readouterr().err
    assert "cannot start any job" in err and "ulimit -n" in err and "Traceback" not in err
