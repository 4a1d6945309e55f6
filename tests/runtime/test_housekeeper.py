"""The housekeeper's chores on their own cadence, driven by an injected clock: no processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import mongomock
import pytest

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.models import COMPLETED, DEAD, Job, Lease, Outcome, Schedule
from queuectl.runtime import housekeeper as housekeeping
from queuectl.runtime.housekeeper import Housekeeper
from queuectl.service import jobs as job_service
from queuectl.service import schedules as schedule_service
from queuectl.store.base import Store
from queuectl.store.mongo.store import MongoStore
from queuectl.store.sql.sqlite import SqliteStore

CONFIG = RuntimeConfig(heartbeat=5, poll_interval=2, lease=30, retain_completed=3600)


class Clock:
    """Monotonic and wall time that only move when the test says so."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = time.time()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    sqlite_store = SqliteStore(str(tmp_path / "q.db"))
    yield sqlite_store
    sqlite_store.close()


def keeper(store: Store, clock: Clock, hooks_run: list[str] | None = None) -> Housekeeper:
    def run_hook(job: Job, config: RuntimeConfig, env: dict[str, str]) -> str | None:
        if hooks_run is not None:
            hooks_run.append(job.id)
        return None if job.exit_code == 0 else "hook exited with 1: no"

    return Housekeeper(
        store,
        lambda: CONFIG,
        {},
        lambda text: None,
        clock=lambda: clock.mono,
        wall=lambda: clock.wall,
        run_hook=run_hook,
    )


def job(job_id: str, at: float, **fields: object) -> Job:
    return Job(id=job_id, command="true", created_at=at, updated_at=at, run_at=at, **fields)  # type: ignore[arg-type]


def test_a_due_schedule_fires_once_per_slot_and_is_looked_at_every_second(store: Store, clock: Clock) -> None:
    schedule_service.insert_schedule(
        store,
        Schedule(
            name="tick",
            cron="* * * * *",
            tz="UTC",
            spec={"command": "true"},
            next_fire_at=clock.wall - 1,
            created_at=clock.wall,
        ),
    )
    chores = keeper(store, clock)
    assert chores.tick(stopping=False) is True  # fired: workers may claim
    assert [j.schedule for j in store.list_jobs()] == ["tick"]
    clock.advance(0.5)
    assert chores.tick(stopping=False) is False and len(store.list_jobs()) == 1
    assert chores.next_moment(stopping=False) == pytest.approx(clock.mono + 0.5)


def test_expired_leases_are_recovered_at_the_heartbeat_cadence(store: Store, clock: Clock) -> None:
    lifecycle.enqueue(store, [job("j", clock.wall - 100)])
    [claimed] = store.claim("gone", None, clock.wall - 100, 30.0)
    chores = keeper(store, clock)
    chores.next_recovery = clock.mono + 1  # not yet
    assert chores.tick(stopping=False) is False
    assert store.get("j").state == "processing"  # type: ignore[union-attr]
    clock.advance(1)
    assert chores.tick(stopping=False) is True
    recovered = store.get("j")
    assert recovered is not None and recovered.state == "failed" and recovered.attempts == claimed.attempts
    assert chores.next_recovery == clock.mono + CONFIG.heartbeat


def test_hooks_run_one_at_a_time_and_a_stop_writes_their_results(store: Store, clock: Clock) -> None:
    ran: list[str] = []
    lifecycle.enqueue(store, [job("a", clock.wall, on_finish="notify"), job("b", clock.wall, on_finish="notify")])
    for _ in ("a", "b"):
        [claimed] = store.claim("w", None, clock.wall, 30.0)
        lifecycle.finish(store, Lease(claimed.id, "w", claimed.attempts), Outcome(COMPLETED, clock.wall, exit_code=0))
    chores = keeper(store, clock, ran)
    chores.tick(stopping=False)
    assert chores.hook_thread is not None
    chores.hook_thread.join(5)
    assert len(ran) == 1 and chores.busy()  # ran, result not written yet
    chores.tick(stopping=True)  # a stopping worker writes the result but starts no new hook
    assert not chores.busy() and len(ran) == 1
    assert store.get(ran[0]).hook_state == "done"  # type: ignore[union-attr]
    clock.advance(1)
    chores.tick(stopping=False)
    chores.hook_thread.join(5)  # type: ignore[union-attr]
    chores.tick(stopping=False)
    assert sorted(ran) == ["a", "b"] and store.get("b").hook_state == "done"  # type: ignore[union-attr]


def test_retention_waits_for_its_first_pass_and_comes_back_soon_after_a_full_batch(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_service, "RETENTION_BATCH", 2)
    old = clock.wall - 7200
    lifecycle.enqueue(store, [job(f"old{n}", old, state=COMPLETED, finished_at=old) for n in range(3)])
    chores = keeper(store, clock)
    chores.tick(stopping=False)
    assert len(store.list_jobs()) == 3  # the first pass comes a few seconds after start
    clock.advance(housekeeping.FIRST_RETENTION_S)
    chores.tick(stopping=False)
    assert len(store.list_jobs()) == 1 and chores.next_retention == clock.mono + 1.0  # a full batch: more soon
    clock.advance(1.0)
    chores.tick(stopping=False)
    assert store.list_jobs() == [] and chores.next_retention == clock.mono + housekeeping.RETENTION_EVERY_S


def test_without_transactions_retention_passes_also_resettle_waiting_jobs(clock: Clock) -> None:
    store = MongoStore(mongomock.MongoClient(), db_name="keeper")
    lifecycle.enqueue(store, [job("p", clock.wall), job("c", clock.wall, after=["p"])])
    store._jobs.update_one({"_id": "p"}, {"$set": {"state": DEAD}})  # its settling step never ran
    chores = keeper(store, clock)
    clock.advance(housekeeping.FIRST_RETENTION_S)
    chores.tick(stopping=False)
    assert store.get("c").state == "cancelled"  # type: ignore[union-attr]


def test_a_stopping_worker_still_recovers_the_jobs_of_dead_ones(store: Store, clock: Clock) -> None:
    lifecycle.enqueue(store, [job("j", clock.wall - 100)])
    store.claim("gone", None, clock.wall - 100, 30.0)
    chores = keeper(store, clock)
    assert chores.tick(stopping=True) is True  # as the old worker did after each heartbeat
    recovered = store.get("j")
    assert recovered is not None and recovered.state == "failed"


def test_retention_passes_finish_a_bulk_enqueue_whose_publisher_died(store: Store, clock: Clock) -> None:
    """A committed batch with staged rows left (its writer was killed after the commit point)."""
    from queuectl.core.defaults import BATCH_ABANDONED_AFTER_S
    from queuectl.core.lifecycle import batches
    from queuectl.core.models import STAGED

    then = clock.wall
    store.registry_put("batches", "b1", {"state": batches.COMMITTED, "created_at": then, "touched_at": then})
    store.insert_jobs([job(f"s{n}", then, state=STAGED, batch="b1") for n in range(3)])
    chores = keeper(store, clock)
    clock.advance(BATCH_ABANDONED_AFTER_S)
    chores.tick(stopping=False)
    assert sorted(j.id for j in store.list_jobs(state="pending")) == ["s0", "s1", "s2"]
    assert chores.next_retention == clock.mono + 1.0  # one chunk a pass, the next one soon
    clock.advance(1.0)
    chores.tick(stopping=False)
    assert store.registry_list("batches") == []


def test_a_corrupt_database_is_not_swallowed_as_a_skipped_chore(store: Store, clock: Clock) -> None:
    """Corruption is fatal for the worker (exit 7); a chore must not log it and go on."""
    from queuectl.core.errors import StoreCorrupt

    def corrupt(*args: object, **kwargs: object) -> int:
        raise StoreCorrupt("database disk image is malformed")

    chores = keeper(store, clock)
    store.expired = corrupt  # type: ignore[method-assign,assignment]
    with pytest.raises(StoreCorrupt):
        chores.tick(stopping=False)
