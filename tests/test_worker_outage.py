"""The worker through a database outage: jobs run on through a short one, their outcomes are
written once it ends (exactly once), and a long one makes the worker kill its own jobs before
their leases could be taken over. The outage is a store whose calls fail on demand."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreUnavailable
from queuectl.core.models import Job
from queuectl.runtime.worker import Worker, WorkerOptions
from queuectl.service import config as config_service
from queuectl.store.sql.sqlite import SqliteStore


class FlakyStore:
    """Passes every call to a real store, except while ``down``: then it raises like a lost link."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.down = False
        self.finish_calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.store, name)
        if not callable(target) or name == "now":  # the clock is no database call
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("cannot reach the database (test outage)")
            if name == "update_job" and kwargs.get("lease") is not None and "state" in args[1]:
                self.finish_calls += 1  # an outcome write (a heartbeat changes no state)
            return target(*args, **kwargs)

        return call


@pytest.fixture
def flaky(tmp_path: Path) -> FlakyStore:
    store = SqliteStore(str(tmp_path / "q.db"))
    config_service.set_config(store, "heartbeat", "0.5")
    config_service.set_config(store, "lease", "2")
    return FlakyStore(store)


def start_job(worker: Worker, store: SqliteStore, command: str) -> Any:
    now = time.time()
    lifecycle.enqueue_job(store, Job(id="j1", command=command, created_at=now, updated_at=now, run_at=now))
    [job] = store.claim(worker.id, None, now, worker.config.lease, 1)
    worker._start(job)
    return worker.slots["j1"]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def test_a_long_outage_kills_the_jobs_before_their_leases_could_lapse(flaky: FlakyStore) -> None:
    worker = Worker(flaky, WorkerOptions())  # type: ignore[arg-type]
    slot = start_job(worker, flaky.store, "sleep 30")
    pid = slot.run.pid
    try:
        flaky.down = True
        # Given one second without contact (lease 2 s, heartbeat 0.5 s): the job runs on
        worker.last_ok_beat = time.monotonic() - 1.0
        worker._heartbeat()
        assert slot.stop_reason is None and alive(pid)

        # When the silence reaches lease - heartbeat
        worker.last_ok_beat = time.monotonic() - 1.6
        worker._heartbeat()

        # Then the job is killed, and nothing will be written for it
        assert slot.stop_reason == "lost"
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
            slot.run.poll()
        assert not alive(pid)
        worker._reap()
        assert worker.unsent == []
    finally:
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_an_outcome_finished_during_an_outage_is_written_once_it_ends(flaky: FlakyStore) -> None:
    worker = Worker(flaky, WorkerOptions())  # type: ignore[arg-type]
    slot = start_job(worker, flaky.store, "echo done")
    deadline = time.monotonic() + 5
    while slot.run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)

    # Given the job ended while the database is unreachable
    flaky.down = True
    worker._reap()
    worker._send_outcomes()
    job = flaky.store.get("j1")
    assert job is not None
    assert len(worker.unsent) == 1 and job.state == "processing"

    # When it is back (within the lease), the kept outcome is written -- once
    flaky.down = False
    worker.next_write_try = 0.0
    worker._send_outcomes()
    worker._send_outcomes()

    job = flaky.store.get("j1")
    assert job is not None
    assert job.state == "completed" and job.exit_code == 0 and job.output is not None and "done" in job.output
    assert worker.unsent == [] and flaky.finish_calls == 1
