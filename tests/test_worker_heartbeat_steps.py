"""Findings 6, 7 and 15 (issue 12): each step of the heartbeat cycle fails on its own, the
outage clock runs from the last renewal that succeeded and is read after a failing call
(which may block for seconds), and worker ids and records survive containers and pruning."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreUnavailable
from queuectl.core.models import Job, WorkerInfo
from queuectl.runtime.slots import Slot
from queuectl.runtime.worker import Worker, WorkerOptions
from queuectl.service import config as config_service
from queuectl.service.workers import beat_worker, list_workers, prune_workers, register_worker
from queuectl.store.sql.sqlite import SqliteStore


class StepFailingStore:
    """A real store whose named primitives fail (after ``delay`` seconds) like a lost link."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.failing: set[str] = set()
        self.delay = 0.0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.store, name)
        if not callable(target) or name not in self.failing:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self.delay)
            raise StoreUnavailable("cannot reach the database (test)")

        return call


@pytest.fixture
def flaky(tmp_path: Path) -> StepFailingStore:
    store = SqliteStore(str(tmp_path / "q.db"))
    config_service.set_config(store, "heartbeat", "0.5")
    config_service.set_config(store, "lease", "2")
    return StepFailingStore(store)


def held_job(worker: Worker, store: SqliteStore) -> Slot:
    """A job the worker holds, with a fake run (nothing is started)."""
    now = time.time()
    lifecycle.enqueue_job(store, Job(id="j1", command="true", created_at=now, updated_at=now, run_at=now))
    [job] = store.claim(worker.id, None, now, worker.config.lease, 1)
    worker._start(job.__class__(**{**job.__dict__, "command": "sleep 30"}))
    return worker.slots["j1"]


def stop(slot: Slot) -> None:
    if slot.run is not None and slot.run.poll() is None:
        os.killpg(slot.run.pid, signal.SIGKILL)
        slot.run.poll()


def test_a_lost_lease_is_acted_on_even_when_the_registry_beat_fails(flaky: StepFailingStore) -> None:
    worker = Worker(flaky, WorkerOptions())  # type: ignore[arg-type]
    slot = held_job(worker, flaky.store)
    try:
        lifecycle.cancel(flaky.store, "j1", time.time())  # the lease is gone
        flaky.failing = {"registry_update", "registry_list"}  # beat_worker and load_config fail

        worker._heartbeat()

        assert slot.stop_reason == "lost"  # killed: not left running as a duplicate
        assert time.monotonic() - worker.last_ok_beat < 1.0  # the renewal itself succeeded
    finally:
        stop(slot)


def test_the_outage_clock_is_read_after_a_failing_call_that_blocked(flaky: StepFailingStore) -> None:
    worker = Worker(flaky, WorkerOptions())  # type: ignore[arg-type]
    slot = held_job(worker, flaky.store)
    try:
        worker.last_ok_beat = time.monotonic() - 0.5  # renewed half a second ago (lease 2 s)
        flaky.failing, flaky.delay = {"update_job"}, 1.2  # the next renewal blocks, then fails

        worker._heartbeat()

        # 1.7 s without a renewal by the time the call returned: past lease - margin (1.5 s)
        assert slot.stop_reason == "lost"
    finally:
        stop(slot)


def test_jobs_are_killed_between_failing_heartbeats_once_their_leases_may_lapse(flaky: StepFailingStore) -> None:
    worker = Worker(flaky, WorkerOptions())  # type: ignore[arg-type]
    slot = held_job(worker, flaky.store)
    try:
        worker.store_down = True  # the last renewal failed
        worker.last_ok_beat = time.monotonic() - 1.6
        worker._enforce_deadlines()  # no heartbeat due: the loop's own check
        assert slot.stop_reason == "lost"
    finally:
        stop(slot)


def test_a_worker_that_was_frozen_but_not_cut_off_lets_its_heartbeat_decide(flaky: StepFailingStore) -> None:
    worker = Worker(flaky, WorkerOptions())  # type: ignore[arg-type]
    slot = held_job(worker, flaky.store)
    try:
        worker.last_ok_beat = time.monotonic() - 1.6  # a long pause (SIGSTOP, swap), no failed call
        worker._enforce_deadlines()
        assert slot.stop_reason is None
        worker._heartbeat()  # the fence still holds: nobody took the job, it runs on
        assert slot.stop_reason is None
    finally:
        stop(slot)


def test_worker_ids_do_not_collide_across_containers_where_every_pid_is_1() -> None:
    ids = {WorkerOptions().worker_id for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(worker_id.rsplit("-", 1)[1]) >= 12 for worker_id in ids)  # 48 random bits


def test_a_pruned_worker_record_is_created_again_by_its_next_beat(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    info = WorkerInfo(id="w1", host="h", pid=1, state="running", started_at=0.0, last_heartbeat=0.0)
    register_worker(store, info)
    assert prune_workers(store, seen_before=100.0) == 1  # another host took it for dead

    beat_worker(store, "w1", 200.0, "running", ["j1"], info=info)

    [again] = list_workers(store)
    assert asdict(again) | {"last_heartbeat": 200.0, "current_jobs": ["j1"]} == asdict(again)
    assert again.last_heartbeat == 200.0 and again.current_jobs == ["j1"]
