"""The counters behind ``counts()`` and ``duration_totals()`` (issue 18 #1) equal a full recount
after a long random mix of every operation that moves, adds or deletes jobs, on every backend.

The recount reads the jobs themselves through ``list_jobs`` (one listing per state, unbounded),
so it shares no code with the counters it checks.
"""

from __future__ import annotations

import random
from typing import Callable

import pytest

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.errors import Conflict, NotFound
from queuectl.core.lifecycle import batches
from queuectl.core.models import COMPLETED, DEAD, FAILED, PROCESSING, STATES, Job, Lease
from queuectl.service import handling
from queuectl.store.base import Store

NOW = 1_000_000.0
QUEUES = ("q0", "q1", "q2")
CONFIG = RuntimeConfig(max_retries=1, backoff_base=2)


def recount(store: Store) -> tuple[dict[str, dict[str, int]], int, float]:
    """``counts()`` and ``duration_totals()`` as computed from every job."""
    counts: dict[str, dict[str, int]] = {}
    timed, seconds = 0, 0.0
    for state in STATES:
        for job in store.list_jobs(state=state, limit=1_000_000):
            counts.setdefault(job.queue, {})
            counts[job.queue][state] = counts[job.queue].get(state, 0) + 1
            if state == COMPLETED and job.duration is not None:
                timed, seconds = timed + 1, seconds + job.duration
    return counts, timed, seconds


def assert_counted(store: Store) -> None:
    counts, timed, seconds = recount(store)
    assert store.counts() == counts
    count, total = store.duration_totals()
    assert count == timed and total == pytest.approx(seconds, abs=1e-6)


class Mix:
    """Random operations on one store, each through the transitions production uses."""

    def __init__(self, store: Store, make_job: Callable[..., Job], seed: int) -> None:
        self.store, self.make_job, self.rnd = store, make_job, random.Random(seed)
        self.now, self.serial = NOW, 0
        self.ids: list[str] = []

    def new_job(self, **fields: object) -> Job:
        self.serial += 1
        job = self.make_job(
            f"j{self.serial:05d}",
            queue=self.rnd.choice(QUEUES),
            created_at=self.now,
            run_at=self.now,
            max_retries=1,
            **fields,
        )
        self.ids.append(job.id)
        return job

    def some_id(self) -> str:
        return self.rnd.choice(self.ids) if self.ids else "none"

    def enqueue(self) -> None:
        parent = self.some_id() if self.ids and self.rnd.random() < 0.3 else None
        try:
            lifecycle.enqueue(self.store, [self.new_job(after=[parent] if parent else [])], now=self.now)
        except (Conflict, NotFound):  # the parent was deleted, or ended so that this could never run
            self.ids.pop()

    def bulk_enqueue(self) -> None:
        jobs = [self.new_job() for _ in range(self.rnd.randint(5, 25))]
        lifecycle.enqueue(self.store, jobs, now=self.now, batch=f"b{self.serial}")

    def run_some(self) -> None:
        for job in lifecycle.claim(self.store, "w1", None, self.now, 30, self.rnd.randint(1, 4)):
            lease = Lease(job.id, "w1", job.attempts)
            roll = self.rnd.random()
            if roll < 0.5:
                outcome = lifecycle.success_outcome(self.now, "ok", self.rnd.uniform(0.001, 3))
            elif roll < 0.85:
                outcome = lifecycle.failure_outcome(job, CONFIG, self.now, "boom", 1, None, 0.5, spread=0)
            else:
                continue  # left running: its lease expires, recovery takes it back
            lifecycle.finish(self.store, lease, outcome)

    def recover(self) -> None:
        lifecycle.recover_expired(self.store, CONFIG, self.now + 60)

    def cancel(self) -> None:
        try:
            lifecycle.cancel(self.store, self.some_id(), self.now)
        except (Conflict, NotFound):
            pass

    def hold_or_release(self) -> None:
        job_id = self.some_id()
        try:
            lifecycle.hold(self.store, job_id, self.now)
        except (Conflict, NotFound):
            try:
                lifecycle.release(self.store, job_id, self.now)
            except (Conflict, NotFound):
                pass

    def dlq_retry(self) -> None:
        try:
            lifecycle.retry_dead(self.store, None if self.rnd.random() < 0.3 else self.some_id(), self.now)
        except (Conflict, NotFound):
            pass

    def purge(self) -> None:
        self.store.purge([COMPLETED, DEAD], limit=self.rnd.randint(1, 10))

    def delete(self) -> None:
        try:
            lifecycle.remove(self.store, self.some_id(), self.now)
        except (Conflict, NotFound):
            pass

    def restart(self) -> None:
        try:
            self.ids.append(handling.restart_job(self.store, self.some_id(), {}))
        except (Conflict, NotFound):
            pass

    def step(self) -> None:
        self.now += self.rnd.uniform(0.5, 5)
        operation = self.rnd.choices(
            [
                self.enqueue,
                self.bulk_enqueue,
                self.run_some,
                self.recover,
                self.cancel,
                self.hold_or_release,
                self.dlq_retry,
                self.purge,
                self.delete,
                self.restart,
            ],
            weights=[6, 2, 10, 2, 2, 2, 1, 1, 2, 1],
        )[0]
        operation()
        if self.rnd.random() < 0.3:  # the housekeeper's pass (PostgreSQL, MongoDB: fold the deltas)
            self.store.repair(self.now)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bulk enqueue of a few jobs is staged in several chunks, then published."""
    monkeypatch.setattr(batches, "BULK_ONE_TRANSACTION", 4)
    monkeypatch.setattr(batches, "BULK_CHUNK", 4)


def test_counters_equal_a_recount_after_a_long_random_mix(store: Store, make_job: Callable[..., Job]) -> None:
    mix = Mix(store, make_job, seed=18)
    for n in range(400):
        mix.step()
        if n % 50 == 0:
            assert_counted(store)
    assert_counted(store)
    counts = store.counts()
    seen = {state for queue in counts.values() for state in queue}
    assert {COMPLETED, FAILED, DEAD, PROCESSING} <= seen or {COMPLETED, DEAD} <= seen  # the mix reached them


def test_staged_jobs_are_not_counted_until_published(store: Store, make_job: Callable[..., Job]) -> None:
    lifecycle.enqueue(store, [make_job("a", created_at=NOW, run_at=NOW)])
    batches.begin(store, "b1")  # what a long enqueue --file does after its first part
    batches._stage(store, "b1", [make_job(f"s{n}", created_at=NOW, run_at=NOW) for n in range(6)])
    assert store.counts() == {"default": {"pending": 1}}
    store.registry_update("batches", {"state": batches.COMMITTED}, "b1", {"state": batches.STAGING})
    batches.publish(store, "b1", NOW)
    assert store.counts() == {"default": {"pending": 7}}
    assert_counted(store)


def test_a_sqlite_file_of_schema_8_gains_counters_from_a_recount(tmp_path: pytest.TempPathFactory) -> None:
    import sqlite3

    from queuectl.store.sql.sqlite import SqliteStore

    path = str(tmp_path / "old.db")  # type: ignore[operator]
    store = SqliteStore(path)
    lifecycle.enqueue(
        store, [Job(id=f"j{n}", command="true", queue=f"q{n % 2}", created_at=NOW, run_at=NOW) for n in range(7)]
    )
    for job in lifecycle.claim(store, "w1", None, NOW, 30, 3):
        lifecycle.finish(store, Lease(job.id, "w1", job.attempts), lifecycle.success_outcome(NOW, None, 1.5))
    store.close()
    conn = sqlite3.connect(path)  # back to schema 8: no counters
    for trigger in ("jobs_count_insert", "jobs_count_update", "jobs_count_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE job_counts")
    conn.execute("PRAGMA user_version=8")
    conn.commit()
    conn.close()

    store = SqliteStore(path)
    assert store.counts() == {"q0": {"completed": 2, "pending": 2}, "q1": {"completed": 1, "pending": 2}}
    assert store.duration_totals() == (3, 4.5)
    lifecycle.enqueue(store, [Job(id="new", command="true", queue="q1", created_at=NOW, run_at=NOW)])
    assert_counted(store)  # and kept from then on
    store.close()


def test_a_postgres_schema_of_version_2_gains_counters_from_a_recount() -> None:
    import psycopg
    from pgserver import fresh_schema, postgres_url

    from queuectl.store.sql.postgres import PostgresStore

    with fresh_schema(postgres_url()) as url:
        store = PostgresStore(url)
        lifecycle.enqueue(store, [Job(id=f"j{n}", command="true", created_at=NOW, run_at=NOW) for n in range(5)])
        for job in lifecycle.claim(store, "w1", None, NOW, 30, 2):
            lifecycle.finish(store, Lease(job.id, "w1", job.attempts), lifecycle.success_outcome(NOW, None, 2.0))
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:  # back to version 2: no counters
            for trigger in ("jobs_count_insert", "jobs_count_update", "jobs_count_delete"):
                conn.execute(f"DROP TRIGGER {trigger} ON jobs")
            conn.execute("DROP TABLE job_count_deltas")
            conn.execute("UPDATE queuectl_schema SET version = 2")
        store = PostgresStore(url)
        try:
            assert store.counts() == {"default": {"completed": 2, "pending": 3}}
            assert store.duration_totals() == (2, 4.0)
            assert store.purge([COMPLETED]) == 2
            assert_counted(store)
        finally:
            store.close()


def test_mongodb_counters_converge_after_a_reply_lost_and_a_repair_cut_short() -> None:
    import mongomock
    import pymongo.errors

    from queuectl.store.mongo.store import MongoStore

    store = MongoStore(mongomock.MongoClient(), db_name="counts")
    lifecycle.enqueue(store, [Job(id=f"j{n}", command="true", created_at=NOW, run_at=NOW) for n in range(4)])
    jobs = lifecycle.claim(store, "w1", None, NOW, 30, 4)
    store.repair(NOW)
    original = store._jobs.update_one
    lost: list[object] = []

    def update_then_lose_the_reply(query: dict[str, object], update: dict[str, object], **kw: object) -> object:
        result = original(query, update, **kw)
        sets = update.get("$set")
        if not lost and isinstance(sets, dict) and sets.get("state") == COMPLETED:
            lost.append(query["_id"])
            raise pymongo.errors.AutoReconnect("reply lost")
        return result

    store._jobs.update_one = update_then_lose_the_reply  # type: ignore[method-assign]
    for job in jobs:
        lifecycle.finish(store, Lease(job.id, "w1", job.attempts), lifecycle.success_outcome(NOW, None, 1.0))
    store._jobs.update_one = original  # type: ignore[method-assign]
    assert lost and store.counts() == {"default": {"completed": 4}}

    # a repair that dies after inserting a delta, before the job moves on: the next one finishes it
    doc = store._jobs.find_one({"cdirty": {"$exists": True}})
    assert doc is not None
    version = doc.get("cv", 0)
    store._count_deltas.insert_one(
        {
            "_id": f"{doc['_id']}:{version}",
            "job": doc["_id"],
            "n": version,
            "from": doc.get("cs"),
            "to": ["default", COMPLETED, 1.0],
        }
    )
    assert store.counts() == {"default": {"completed": 4}}
    assert store.duration_totals() == (4, 4.0)
    store.repair(NOW + 1)
    store.repair(NOW + 2)
    assert (
        store._jobs.count_documents({"cdirty": {"$exists": True}}) == 0 and store._count_deltas.count_documents({}) == 0
    )
    assert store.counts() == {"default": {"completed": 4}} and store.duration_totals() == (4, 4.0)
    assert store.purge([COMPLETED]) == 4
    store.repair(NOW + 3)
    assert store.counts() == {} and store.duration_totals() == (0, 0.0)
