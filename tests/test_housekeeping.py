"""Worker duties beyond running jobs: hooks that time out, one broken schedule among good ones,
retention that yields to heartbeats, a full disk during an outcome write, and MongoDB's
non-atomic steps (purge, schedule fire) staying safe under interleaving."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import mongomock

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.errors import StoreReadOnly
from queuectl.core.models import COMPLETED, DEAD, PENDING, Job, Lease, Outcome, Schedule
from queuectl.runtime import hooks
from queuectl.runtime.worker import Worker, WorkerOptions
from queuectl.service import jobs as job_service
from queuectl.service import schedules as schedule_service
from queuectl.store.mongo.store import MongoStore
from queuectl.store.sql.sqlite import SqliteStore


def job(job_id: str, **fields: Any) -> Job:
    now = time.time()
    return Job(id=job_id, command="true", created_at=now, updated_at=now, run_at=now, **fields)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def test_a_hook_that_times_out_loses_its_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    hooked = job("j", on_finish=f"sleep 57 & echo $! > {pid_file}; sleep 58", state=COMPLETED)
    started = time.monotonic()
    error = hooks.run_hook(hooked, RuntimeConfig(hook_timeout=1), dict(os.environ))
    assert error == "hook timed out after 1s"
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 3
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child), "the hook's background child outlived its timeout"


def test_a_hook_that_leaves_a_background_child_is_not_a_timeout(tmp_path: Path) -> None:
    hooked = job("j", on_finish="sleep 30 & exit 0", state=COMPLETED)
    started = time.monotonic()
    assert hooks.run_hook(hooked, RuntimeConfig(hook_timeout=5), dict(os.environ)) is None
    assert time.monotonic() - started < 4


def test_one_broken_schedule_does_not_stop_the_others(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    now = time.time()
    # a schedule whose job spec went bad after it was stored (e.g. edited in the database)
    schedule_service.insert_schedule(
        store,
        Schedule(name="bad", cron="* * * * *", tz="UTC", spec={"command": ""}, next_fire_at=now - 1, created_at=now),
    )
    schedule_service.insert_schedule(
        store,
        Schedule(
            name="good", cron="* * * * *", tz="UTC", spec={"command": "true"}, next_fire_at=now - 1, created_at=now
        ),
    )
    fired = schedule_service.fire_due_schedules(store, now)
    assert len(fired) == 1 and fired[0].startswith("good-")


def test_retention_deletes_one_batch_per_pass_when_asked(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    old = time.time() - 30 * 86400
    lifecycle.enqueue(
        store,
        (
            Job(
                id=f"j{n}", command="true", state=COMPLETED, created_at=old, updated_at=old, run_at=old, finished_at=old
            )
            for n in range(job_service.RETENTION_BATCH + 10)
        ),
    )
    config = RuntimeConfig(retain_completed=86400)
    assert job_service.apply_retention(store, config, time.time(), max_batches=1) == job_service.RETENTION_BATCH
    assert job_service.apply_retention(store, config, time.time(), max_batches=1) == 10


def test_a_full_disk_during_an_outcome_write_keeps_the_outcome(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    worker = Worker(store, WorkerOptions())
    lifecycle.enqueue_job(store, job("j1"))
    [claimed] = store.claim(worker.id, None, time.time(), 30, 1)
    worker._start(claimed)
    run = worker.slots["j1"].run
    assert run is not None
    while run.poll() is None:
        time.sleep(0.01)
    worker._reap()

    real = store.update_job

    def full(*args: object, **kwargs: object) -> bool:
        raise StoreReadOnly("the disk is full")

    store.update_job = full  # type: ignore[method-assign]
    worker._send_outcomes()  # must not raise out of the worker
    kept = store.get("j1")
    assert kept is not None
    assert len(worker.unsent) == 1 and kept.state == "processing"
    store.update_job = real  # type: ignore[method-assign]
    worker.next_write_try = 0.0
    worker._send_outcomes()
    written = store.get("j1")
    assert written is not None
    assert written.state == COMPLETED


def test_mongo_batched_purge_spares_a_job_retried_in_between() -> None:
    store = MongoStore(mongomock.MongoClient(), db_name="purge")
    lifecycle.enqueue_job(store, job("d"))
    [claimed] = store.claim("w", None, time.time(), 30, 1)
    lifecycle.finish(store, Lease("d", "w", claimed.attempts), Outcome(DEAD, time.time() - 100))
    original_find = store._jobs.find

    class Cursor:
        def __init__(self, docs: list[object]) -> None:
            self.docs = docs

        def limit(self, _n: int) -> list[object]:
            return self.docs

    def find_then_retry(*args: object, **kwargs: object) -> Cursor:
        store._jobs.find = original_find  # type: ignore[method-assign]
        docs = list(original_find(*args, **kwargs))
        lifecycle.retry_dead(store, "d", time.time())  # a `dlq retry` lands between the read and the delete
        return Cursor(docs)

    store._jobs.find = find_then_retry  # type: ignore[method-assign]
    assert store.purge([DEAD], time.time(), limit=1000) == 0
    retried = store.get("d")
    assert retried is not None
    assert retried.state == PENDING


def test_mongo_schedule_fire_whose_job_exists_still_moves_on() -> None:
    # Given a worker that inserted the slot's job and died before moving the schedule on
    store = MongoStore(mongomock.MongoClient(), db_name="fire")
    now = time.time()
    schedule_service.insert_schedule(
        store,
        Schedule(name="s", cron="* * * * *", tz="UTC", spec={"command": "true"}, next_fire_at=now - 1, created_at=now),
    )
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now - 1))
    lifecycle.enqueue_job(store, job(f"s-{stamp}"))

    # When the next worker fires the same slot
    fired = schedule_service.fire_due_schedules(store, now)

    # Then no second job is made, and the schedule moves on
    assert fired == []
    assert schedule_service.list_schedules(store)[0].next_fire_at > now
    assert len([j for j in store.list_jobs(limit=10) if j.id.startswith("s-")]) == 1
