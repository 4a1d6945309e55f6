"""A bulk enqueue bigger than one transaction should hold (issue 11 #5): staged in chunks, still
all-or-nothing, invisible until its commit point, and finished or removed by the sweeper when
its writer dies. ``BULK_CHUNK`` is made small so that a few hundred jobs take several chunks."""

from __future__ import annotations

import sqlite3
import time
from typing import Callable, Iterable, Iterator

import pytest

from queuectl.core import lifecycle
from queuectl.core.defaults import BATCH_ABANDONED_AFTER_S
from queuectl.core.errors import Conflict, DuplicateJobId, UniqueKeyTaken
from queuectl.core.lifecycle import batches
from queuectl.core.models import COMPLETED, PENDING, STAGED, WAITING, Job, Lease
from queuectl.store.base import Store

CHUNK = 50


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "BULK_ONE_TRANSACTION", CHUNK)
    monkeypatch.setattr(batches, "BULK_CHUNK", CHUNK)


def bulk(store: Store, jobs: Iterable[Job]) -> int:
    """An ``enqueue --file``: one batch."""
    return lifecycle.enqueue(store, jobs, batch="file1")


def fresh(n: int, make_job: Callable[..., Job], prefix: str = "j", **fields: object) -> Iterator[Job]:
    now = time.time()
    for i in range(n):
        yield make_job(f"{prefix}{i:05d}", created_at=now, **fields)


def total(store: Store) -> int:
    return sum(sum(states.values()) for states in store.counts().values())


def leftovers(store: Store) -> tuple[list[Job], list[dict[str, object]]]:
    return store.list_jobs(state=STAGED, limit=10_000), store.registry_list("batches")


# --- the contract primitives ------------------------------------------------------------------------


def test_staged_jobs_are_invisible_and_published_by_batch(store: Store, make_job: Callable[..., Job]) -> None:
    now = time.time()
    staged = [make_job(f"s{i}", created_at=now, state=STAGED, batch="b1") for i in range(3)]
    other = make_job("o1", created_at=now, state=STAGED, batch="b2")
    child = make_job("c1", created_at=now, state=STAGED, batch="b1", after=["s0"])
    store.insert_jobs([*staged, other, child])
    assert store.counts() == {} and store.list_jobs() == [] and store.get("s0") is None
    assert store.get("s0", staged=True) is not None
    assert sorted(j.id for j in store.list_jobs(state=STAGED, batch="b1")) == ["c1", "s0", "s1", "s2"]

    def publish(limit: int) -> int:
        changes = {"state": PENDING, "updated_at": now}
        return store.update_jobs(changes, states=(STAGED,), batch="b1", parentless=True, limit=limit)

    assert publish(2) == 2  # bounded, and never a job with parents
    assert publish(10) == 1
    assert publish(10) == 0
    assert sorted(j.id for j in store.list_jobs(state=PENDING)) == ["s0", "s1", "s2"]
    assert [j.id for j in store.list_jobs(state=STAGED, batch="b1")] == ["c1"]
    assert store.purge([STAGED], batch="b2") == 1
    assert [j.id for j in store.list_jobs(state=STAGED)] == ["c1"]


# --- the lifecycle: staged in chunks -----------------------------------------------------------


def test_a_big_enqueue_does_not_hold_the_write_lock_while_it_reads_its_input(
    store: Store, make_job: Callable[..., Job], tmp_path: object
) -> None:
    """The regression: one transaction for the whole file kept every other writer (heartbeats,
    claims) waiting until the last line was read and written (13.6 s for 600k lines)."""
    if not isinstance(store.url, str) or not store.url.startswith("sqlite"):
        pytest.skip("the write lock is SQLite's; other stores bound their transactions on their own")
    seen: dict[str, object] = {}

    def lines() -> Iterator[Job]:
        for i, job in enumerate(fresh(5 * CHUNK, make_job)):
            if i == 3 * CHUNK:  # two chunks written: another process writes at once, sees none
                other = sqlite3.connect(store.url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                seen["visible"] = other.execute("SELECT count(*) FROM jobs WHERE state != 'staged'").fetchone()[0]
                other.close()
                seen["listed"] = len(store.list_jobs(limit=1000))
            yield job

    assert bulk(store, lines()) == 5 * CHUNK
    assert seen == {"visible": 0, "listed": 0}
    assert store.counts() == {"default": {PENDING: 5 * CHUNK}}
    assert leftovers(store) == ([], [])
    assert len(store.list_jobs(batch="file1", limit=10_000)) == 5 * CHUNK


def test_a_bulk_enqueue_that_fits_one_transaction_is_never_staged(store: Store, make_job: Callable[..., Job]) -> None:
    seen = []

    def lines() -> Iterator[Job]:
        for job in fresh(CHUNK, make_job):
            seen.append(len(store.registry_list("batches")))
            yield job

    assert bulk(store, lines()) == CHUNK
    assert set(seen) == {0} and leftovers(store) == ([], [])
    assert {job.batch for job in store.list_jobs(limit=1000)} == {"file1"}


def test_a_conflict_late_in_a_big_enqueue_leaves_nothing(store: Store, make_job: Callable[..., Job]) -> None:
    lifecycle.enqueue(store, [make_job("taken", created_at=time.time())])

    def lines() -> Iterator[Job]:
        yield from fresh(3 * CHUNK, make_job)
        yield make_job("taken", created_at=time.time())

    with pytest.raises(DuplicateJobId):
        bulk(store, lines())
    assert total(store) == 1 and leftovers(store) == ([], [])
    assert enqueued_events(store) == [("taken", PENDING)]  # the log claims nothing that did not happen


def test_a_unique_key_is_held_by_a_staged_job_across_chunks(store: Store, make_job: Callable[..., Job]) -> None:
    def lines() -> Iterator[Job]:
        yield make_job("first", created_at=time.time(), unique_key="k")
        yield from fresh(2 * CHUNK, make_job)
        yield make_job("second", created_at=time.time(), unique_key="k")

    with pytest.raises(UniqueKeyTaken):
        bulk(store, lines())
    assert total(store) == 0 and leftovers(store) == ([], [])


def test_input_that_fails_midway_leaves_nothing(store: Store, make_job: Callable[..., Job]) -> None:
    def lines() -> Iterator[Job]:
        yield from fresh(3 * CHUNK + 7, make_job)
        raise ValueError("line 158: not JSON")

    with pytest.raises(ValueError):
        bulk(store, lines())
    assert total(store) == 0 and leftovers(store) == ([], [])
    assert enqueued_events(store) == []


def test_a_chain_across_chunks_is_published_waiting_and_settles(store: Store, make_job: Callable[..., Job]) -> None:
    now = time.time()
    chain = [make_job("c00000", created_at=now)] + [
        make_job(f"c{i:05d}", created_at=now, after=[f"c{i - 1:05d}"]) for i in range(1, 3 * CHUNK)
    ]
    assert bulk(store, chain) == 3 * CHUNK
    assert store.counts() == {"default": {PENDING: 1, WAITING: 3 * CHUNK - 1}}
    (job,) = lifecycle.claim(store, "w1", None, time.time(), 30.0, 1)
    assert job.id == "c00000"
    lifecycle.finish(store, Lease(job.id, "w1", 1), lifecycle.success_outcome(time.time(), "", 0.1))
    assert store.get("c00001").state == PENDING  # type: ignore[union-attr]


def test_a_parent_finishing_while_its_child_is_staged_does_not_strand_the_child(
    store: Store, make_job: Callable[..., Job]
) -> None:
    """The child's start state is decided at publishing, from its parent's state then."""
    lifecycle.enqueue(store, [make_job("parent", created_at=time.time())])

    def lines() -> Iterator[Job]:
        yield make_job("child", created_at=time.time(), after=["parent"])
        for i, job in enumerate(fresh(3 * CHUNK, make_job)):
            if i == 2 * CHUNK:  # the child is staged (waiting, were it published): its parent ends
                (parent,) = lifecycle.claim(store, "w1", ["default"], time.time(), 30.0, 1)
                assert parent.id == "parent"
                lifecycle.finish(store, Lease("parent", "w1", 1), lifecycle.success_outcome(time.time(), "", 0.1))
            yield job

    bulk(store, lines())
    child = store.get("child")
    assert child is not None and child.state == PENDING
    assert store.get("parent").state == COMPLETED  # type: ignore[union-attr]


def test_a_parent_staged_by_another_batch_is_refused(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_jobs([make_job("elsewhere", created_at=time.time(), state=STAGED, batch="other")])

    def lines() -> Iterator[Job]:
        yield from fresh(2 * CHUNK, make_job)
        yield make_job("child", created_at=time.time(), after=["elsewhere"])

    with pytest.raises(Exception, match="no job 'elsewhere'"):
        bulk(store, lines())


# --- the sweeper ----------------------------------------------------------------------------------


def _stage_by_hand(store: Store, make_job: Callable[..., Job], batch: str, n: int, at: float) -> None:
    """What a stager that died after writing its rows (and before its commit) left behind."""
    if not store.transactional:
        pytest.skip("MongoDB stages and sweeps its bulk inserts itself (tests/mongo/test_batches.py)")
    store.registry_put("batches", batch, {"state": batches.STAGING, "created_at": at, "touched_at": at})
    store.insert_jobs(
        make_job(f"{batch}-{i}", created_at=at, state=STAGED, batch=batch, unique_key=f"{batch}-{i}") for i in range(n)
    )


def test_the_sweeper_removes_a_dead_stagers_rows_and_frees_their_keys(
    store: Store, make_job: Callable[..., Job]
) -> None:
    then = time.time()
    _stage_by_hand(store, make_job, "dead", 2 * CHUNK + 3, then)
    assert lifecycle.sweep_batches(store, then + 10) is False  # still fresh: left alone
    assert len(leftovers(store)[0]) == 2 * CHUNK + 3
    later = then + BATCH_ABANDONED_AFTER_S + 1
    while lifecycle.sweep_batches(store, later):
        pass
    assert leftovers(store) == ([], [])
    lifecycle.enqueue(store, [make_job("again", created_at=time.time(), unique_key="dead-0")])  # key free


def test_the_sweeper_publishes_a_committed_batch_whose_publisher_died(
    store: Store, make_job: Callable[..., Job]
) -> None:
    then = time.time()
    _stage_by_hand(store, make_job, "done", 2 * CHUNK + 3, then)
    assert store.registry_update("batches", {"state": batches.COMMITTED}, "done", {"state": batches.STAGING})
    while lifecycle.sweep_batches(store, then + BATCH_ABANDONED_AFTER_S):
        pass
    assert store.counts() == {"default": {PENDING: 2 * CHUNK + 3}}
    assert leftovers(store) == ([], [])


def test_a_stager_stopped_past_the_abandon_time_fails_with_nothing_enqueued(
    store: Store, make_job: Callable[..., Job]
) -> None:
    if not store.transactional:
        pytest.skip("MongoDB stages a bulk insert inside insert_jobs (see its store), not in batches")

    def lines() -> Iterator[Job]:
        for i, job in enumerate(fresh(4 * CHUNK, make_job)):
            if i == 2 * CHUNK:  # the stager was stopped (kill -STOP): another worker's sweeper ran
                while lifecycle.sweep_batches(store, time.time() + BATCH_ABANDONED_AFTER_S + 1):
                    pass
            yield job

    with pytest.raises(Conflict, match="abandoned; nothing was enqueued"):
        bulk(store, lines())
    assert total(store) == 0 and leftovers(store) == ([], [])


# --- the event log ----------------------------------------------------------------------------------


def enqueued_events(store: Store) -> list[tuple[str | None, str | None]]:
    """The log's ``enqueued`` events (job id, state), in sequence order; on MongoDB after the
    repair pass has published what the writer left in the outboxes."""
    if not store.transactional:
        store.repair(time.time() + 60)  # type: ignore[attr-defined]
    return [(e.job_id, e.state) for e in store.read_events(0, 100_000) if e.kind == "enqueued"]


def test_a_staged_bulk_enqueue_logs_one_enqueued_event_per_job_at_publishing(
    store: Store, make_job: Callable[..., Job]
) -> None:
    lifecycle.enqueue(store, [make_job("parent", created_at=time.time())])
    jobs = [*fresh(3 * CHUNK + 7, make_job), make_job("child", created_at=time.time(), after=["parent"])]
    assert bulk(store, jobs) == len(jobs)
    logged = enqueued_events(store)
    assert logged[0] == ("parent", PENDING)
    assert sorted(logged[1:]) == sorted((job.id, WAITING if job.after else PENDING) for job in jobs)
    if store.transactional:  # one chunk after another, each in the order it was written
        assert [job_id for job_id, _ in logged[1:]] == [job.id for job in jobs]


def test_a_committed_batch_the_sweeper_publishes_logs_its_enqueued_events(
    store: Store, make_job: Callable[..., Job]
) -> None:
    then = time.time()
    _stage_by_hand(store, make_job, "done", 2 * CHUNK + 3, then)
    assert enqueued_events(store) == []  # staged: nothing happened yet
    assert store.registry_update("batches", {"state": batches.COMMITTED}, "done", {"state": batches.STAGING})
    while lifecycle.sweep_batches(store, then + BATCH_ABANDONED_AFTER_S):
        pass
    assert sorted(enqueued_events(store)) == sorted((f"done-{i}", PENDING) for i in range(2 * CHUNK + 3))
