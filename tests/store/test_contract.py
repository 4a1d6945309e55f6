"""The store contract (queuectl/store/base.py), asserted on every backend through the ``store`` fixture.

Every time is passed explicitly (``NOW`` and offsets from it), so the tests own the clock. Jobs are
taken through real transitions (enqueue, claim, finish, cancel) rather than written in their final
state, so each test also exercises the path production uses. The service's rules (recovery, retry
and backoff) are checked here too, on each backend; the races are in test_races.py and the index
use in test_query_plans.py. A known bug is a strict xfail on the backends that have it.
"""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.errors import Conflict, NotFound
from queuectl.core.models import (
    CANCELLED,
    COMPLETED,
    DEAD,
    FAILED,
    PENDING,
    PROCESSING,
    WAITING,
    Job,
    Lease,
    Outcome,
    Schedule,
    WorkerInfo,
)
from queuectl.service import config as config_service
from queuectl.service import queues as queue_service
from queuectl.service import schedules as schedule_service
from queuectl.service import workers as worker_service
from queuectl.store.base import Store
from queuectl.store.sql.postgres import PostgresStore
from queuectl.store.sql.sqlite import SqliteStore

NOW = 1000.0  # also make_job's default created_at / run_at
LEASE = 30.0

MakeJob = Callable[..., Job]


# --- helpers ------------------------------------------------------------------------------------


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


def job_of(store: Store, job_id: str) -> Job:
    """The job with that id, which must exist."""
    job = store.get(job_id)
    assert job is not None, f"no job {job_id!r}"
    return job


def lease_of(job: Job) -> Lease:
    assert job.locked_by is not None
    return Lease(job.id, job.locked_by, job.attempts)


def claim_one(
    store: Store, worker: str = "w1", queues: list[str] | None = None, now: float = NOW, lease: float = LEASE
) -> Job:
    jobs = store.claim(worker, queues, now, lease)
    assert len(jobs) == 1, f"expected one claimed job, got {ids(jobs)}"
    return jobs[0]


def settle(store: Store, job: Job, state: str, at: float, **outcome: Any) -> Job:
    """Enqueue ``job``, claim it at its run_at and end the attempt in ``state`` at ``at``.

    The job must be the first eligible one of its queue. ``outcome`` overrides Outcome fields.
    """
    lifecycle.enqueue_job(store, job)
    claimed = claim_one(store, "setup-worker", [job.queue], now=job.run_at)
    assert claimed.id == job.id, "settle() needs its job to be first in its queue"
    if state == CANCELLED:
        return lifecycle.cancel(store, job.id, at)
    fields: dict[str, Any] = {
        "exit_code": 0 if state == COMPLETED else 1,
        "duration": at - job.run_at,
        "run_at": at + 60.0 if state == FAILED else None,
        "last_error": None if state == COMPLETED else "exit code 1",
    }
    fields.update(outcome)
    assert lifecycle.finish(store, lease_of(claimed), Outcome(state, at, **fields))
    settled = job_of(store, job.id)
    assert settled.state == state
    return settled


def worker_info(
    worker_id: str, started_at: float, state: str = "running", last_heartbeat: float | None = None
) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host-1",
        pid=4242,
        state=state,
        started_at=started_at,
        last_heartbeat=started_at if last_heartbeat is None else last_heartbeat,
        queues="default,bulk",
        concurrency=2,
    )


def second_handle(store: Store) -> Store:
    """Another connection to the same database (SQLite: a second connection on the file)."""
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path)
    if isinstance(store, PostgresStore):
        return PostgresStore(store.url)
    return store


# --- enqueue_many / enqueue ---------------------------------------------------------------------


def test_enqueue_many_inserts_every_job_and_returns_the_count(store: Store, make_job: MakeJob) -> None:
    jobs = [make_job("a", created_at=NOW), make_job("b", created_at=NOW + 1), make_job("c", created_at=NOW + 2)]

    assert lifecycle.enqueue(store, jobs) == 3

    assert sorted(ids(store.list_jobs())) == ["a", "b", "c"]
    assert lifecycle.enqueue(store, []) == 0


def test_a_job_reads_back_exactly_as_enqueued(store: Store, make_job: MakeJob) -> None:
    job = make_job(
        "full",
        command='echo "$GREETING" > out.txt',
        queue="reports",
        priority=7,
        max_retries=5,
        timeout=12.5,
        cwd="/srv/app",
        env={"GREETING": "héllo", "EMPTY": ""},
        created_at=NOW,
        run_at=NOW + 3600.0,
    )
    lifecycle.enqueue_job(store, job)

    assert job_of(store, "full") == job


def test_enqueue_of_an_existing_id_is_a_conflict(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("same", command="echo first"))

    with pytest.raises(Conflict, match="same"):
        lifecycle.enqueue_job(store, make_job("same", command="echo second"))

    assert job_of(store, "same").command == "echo first"


def test_enqueue_many_with_a_duplicate_in_the_middle_inserts_nothing(store: Store, make_job: MakeJob) -> None:
    # Given an existing job "dup"
    lifecycle.enqueue_job(store, make_job("dup", created_at=NOW - 10))
    # When a batch holding "dup" between two new jobs is enqueued
    batch = [
        make_job("new-1", created_at=NOW),
        make_job("dup", created_at=NOW + 1),
        make_job("new-2", created_at=NOW + 2),
    ]
    with pytest.raises(Conflict, match="dup"):
        lifecycle.enqueue(store, batch)
    # Then none of the batch is there, before or after the duplicate
    assert store.get("new-1") is None
    assert store.get("new-2") is None
    assert ids(store.list_jobs()) == ["dup"]
    assert store.counts() == {"default": {"pending": 1}}


def test_enqueue_many_with_the_same_id_twice_in_the_batch_inserts_nothing(store: Store, make_job: MakeJob) -> None:
    with pytest.raises(Conflict, match="twice"):
        lifecycle.enqueue(store, [make_job("twice"), make_job("other"), make_job("twice")])

    assert store.list_jobs() == []


@pytest.mark.parametrize("good_jobs", [2, 1500], ids=["small", "over-one-insert-batch"])
def test_enqueue_many_when_the_iterable_raises_midway_inserts_nothing(
    store: Store, make_job: MakeJob, good_jobs: int
) -> None:
    def jobs() -> Iterator[Job]:
        for n in range(good_jobs):
            yield make_job(f"job-{n}", created_at=NOW + n)
        raise ValueError("line 3: malformed JSON")

    with pytest.raises(ValueError, match="malformed"):
        lifecycle.enqueue(store, jobs())

    assert store.list_jobs() == []
    assert store.counts() == {}
    assert store.claim("w1", None, NOW + 10_000, LEASE) == []
    # the store is still usable (no transaction or lock left behind)
    assert lifecycle.enqueue(store, [make_job("after")]) == 1


def test_jobs_of_an_unfinished_enqueue_cannot_be_seen_or_claimed(store: Store, make_job: MakeJob) -> None:
    # Given a bulk enqueue larger than one insert batch, observed from another handle midway
    observer = second_handle(store)
    seen: list[Any] = []

    def jobs() -> Iterator[Job]:
        for n in range(1200):
            yield make_job(f"bulk-{n}", created_at=NOW + n)
        seen.append((observer.counts(), ids(observer.list_jobs()), observer.next_due(None)))
        if not isinstance(store, SqliteStore):  # a SQLite claim would wait for the writer's lock
            seen.append(ids(observer.claim("w1", None, NOW + 10_000, LEASE)))
        yield make_job("last", created_at=NOW + 5000)

    # When it completes
    assert lifecycle.enqueue(store, jobs()) == 1201
    # Then nothing was visible midway, and everything is afterwards
    assert seen[0] == ({}, [], None)
    assert seen[1:] in ([], [[]])
    assert store.counts() == {"default": {"pending": 1201}}
    if observer is not store:
        observer.close()


def _wait_readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_enqueue_many_wakes_idle_workers_once_after_the_commit(store: Store, make_job: MakeJob) -> None:
    waker = store.waker("w-idle")
    if waker is None:
        pytest.skip("this backend offers no waker here: its workers poll")
    sqlite = isinstance(store, SqliteStore)
    try:
        # Given an idle worker's waker, drained after a first job
        lifecycle.enqueue_job(store, make_job("existing"))
        assert _wait_readable(waker.fileno(), 5.0)
        if not sqlite:
            time.sleep(0.2)  # a change stream may deliver one event per inserted document
        waker.drain()
        # When a batch is refused, nobody is woken (SQLite: nothing was committed)
        with pytest.raises(Conflict):
            lifecycle.enqueue(store, [make_job("new"), make_job("existing")])
        if sqlite:
            assert not _wait_readable(waker.fileno(), 0.2)
        # When a batch is committed, the worker is woken: once for the batch, not once per job
        lifecycle.enqueue(store, [make_job(f"j{n}") for n in range(3)])
        assert _wait_readable(waker.fileno(), 5.0)
        if sqlite:
            assert waker.drain() == b"!"
    finally:
        waker.close()


def test_get_does_not_see_a_job_of_an_unfinished_enqueue(store: Store, make_job: MakeJob) -> None:
    observer = second_handle(store)
    seen: list[Job | None] = []

    def jobs() -> Iterator[Job]:
        for n in range(1200):
            yield make_job(f"bulk-{n}", created_at=NOW + n)
        seen.append(observer.get("bulk-0"))

    lifecycle.enqueue(store, jobs())

    assert seen == [None]
    if observer is not store:
        observer.close()


# --- claim --------------------------------------------------------------------------------------


def test_claim_hands_the_job_to_the_worker_under_a_lease(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("a", created_at=NOW - 10))

    [job] = store.claim("w1", None, NOW, LEASE)

    assert job.id == "a"
    assert job.state == PROCESSING
    assert job.attempts == 1
    assert job.locked_by == "w1"
    assert job.lease_expires_at == NOW + LEASE
    assert job.started_at == NOW
    assert job.updated_at == NOW
    assert job_of(store, "a") == job


def test_claim_skips_a_job_whose_run_at_is_in_the_future(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("later", run_at=NOW + 60))

    assert store.claim("w1", None, NOW, LEASE) == []
    assert store.claim("w1", None, NOW + 59.9, LEASE) == []
    assert ids(store.claim("w1", None, NOW + 60, LEASE)) == ["later"]  # run_at <= now


def test_claim_order_is_priority_then_enqueue_time(store: Store, make_job: MakeJob) -> None:
    # Given jobs enqueued in an order unrelated to the claim order
    lifecycle.enqueue(
        store,
        [
            make_job("low-old", priority=0, created_at=NOW - 9),
            make_job("high-new", priority=5, created_at=NOW - 5),
            make_job("mid", priority=1, created_at=NOW - 8),
            make_job("high-old", priority=5, created_at=NOW - 7),
            make_job("negative", priority=-3, created_at=NOW - 10),
        ],
    )
    expected = ["high-old", "high-new", "mid", "low-old", "negative"]

    # When they are claimed one at a time
    one_by_one = [claim_one(store).id for _ in range(5)]

    # Then higher priority comes first, then FIFO
    assert one_by_one == expected


def test_claim_with_a_limit_takes_the_first_jobs_in_claim_order(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job(f"p{p}", priority=p, created_at=NOW - p) for p in range(5)])

    first = store.claim("w1", None, NOW, LEASE, limit=3)
    rest = store.claim("w2", None, NOW, LEASE, limit=10)

    assert ids(first) == ["p4", "p3", "p2"]
    assert all(j.state == PROCESSING and j.locked_by == "w1" and j.attempts == 1 for j in first)
    assert ids(rest) == ["p1", "p0"]
    assert all(j.locked_by == "w2" for j in rest)
    assert store.claim("w3", None, NOW, LEASE, limit=10) == []


def test_claim_follows_the_order_of_the_queue_list_before_priority(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(
        store,
        [
            make_job("bulk-job", queue="bulk", priority=100, created_at=NOW - 100),
            make_job("urgent-job", queue="urgent", priority=0, created_at=NOW - 1),
            make_job("other-job", queue="other", priority=1000, created_at=NOW - 200),
        ],
    )

    first = claim_one(store, queues=["urgent", "bulk"])
    second = claim_one(store, queues=["urgent", "bulk"])

    assert (first.id, second.id) == ("urgent-job", "bulk-job")
    assert store.claim("w1", ["urgent", "bulk", "empty"], NOW, LEASE) == []  # "other" not listed
    assert claim_one(store, queues=None).id == "other-job"  # None: any queue


def test_claim_without_queues_takes_from_any_queue_by_priority(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(
        store,
        [
            make_job("a-low", queue="a", priority=1, created_at=NOW - 3),
            make_job("b-high", queue="b", priority=9, created_at=NOW - 2),
            make_job("c-mid", queue="c", priority=5, created_at=NOW - 1),
        ],
    )

    assert [claim_one(store, queues=None).id for _ in range(3)] == ["b-high", "c-mid", "a-low"]


def test_claim_with_a_limit_fills_from_the_queues_in_order(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(
        store,
        [
            make_job("a-1", queue="a", priority=0, created_at=NOW - 1),
            make_job("b-top", queue="b", priority=9, created_at=NOW - 3),
            make_job("b-next", queue="b", priority=0, created_at=NOW - 2),
        ],
    )

    claimed = store.claim("w1", ["a", "b"], NOW, LEASE, limit=2)

    assert sorted(ids(claimed)) == ["a-1", "b-top"]
    assert job_of(store, "b-next").state == PENDING


def test_claim_returns_its_jobs_in_claim_order_across_queues(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(
        store,
        [
            make_job("a-1", queue="a", priority=0, created_at=NOW - 1),
            make_job("b-top", queue="b", priority=9, created_at=NOW - 3),
        ],
    )

    assert ids(store.claim("w1", ["a", "b"], NOW, LEASE, limit=2)) == ["a-1", "b-top"]


def test_a_paused_queue_is_skipped_until_resumed(store: Store, make_job: MakeJob) -> None:
    # Given a paused queue "a" holding the best job, and an active queue "b"
    lifecycle.enqueue(
        store,
        [
            make_job("a-job", queue="a", priority=9, created_at=NOW - 9),
            make_job("b-1", queue="b", created_at=NOW - 2),
            make_job("b-2", queue="b", created_at=NOW - 1),
        ],
    )
    queue_service.set_paused(store, "a", True)
    queue_service.set_paused(store, "a", True)  # idempotent
    assert queue_service.paused_queues(store) == {"a"}

    # Then no claim takes from "a", whether named or not
    assert store.claim("w1", ["a"], NOW, LEASE) == []
    assert ids(store.claim("w1", ["a", "b"], NOW, LEASE)) == ["b-1"]
    assert ids(store.claim("w1", None, NOW, LEASE, limit=5)) == ["b-2"]
    assert job_of(store, "a-job").state == PENDING

    # When "a" is resumed, its job is claimable again
    queue_service.set_paused(store, "a", False)
    assert queue_service.paused_queues(store) == set()
    assert ids(store.claim("w1", ["a"], NOW, LEASE)) == ["a-job"]


def test_a_claimed_job_is_not_claimed_again(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("once"))
    claim_one(store, "w1")

    assert store.claim("w2", None, NOW, LEASE) == []
    # not even once its lease has run out: only recovery gives a job back
    assert store.claim("w2", None, NOW + LEASE + 100, LEASE) == []
    job = job_of(store, "once")
    assert (job.state, job.locked_by, job.attempts) == (PROCESSING, "w1", 1)


def test_a_failed_job_is_claimable_again_at_its_run_at(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("flaky"), FAILED, at=NOW + 5, run_at=NOW + 50)

    assert store.claim("w1", None, NOW + 49, LEASE) == []
    job = claim_one(store, "w2", now=NOW + 50)
    assert (job.id, job.attempts, job.locked_by) == ("flaky", 2, "w2")


def test_finished_jobs_are_never_claimed(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("done", queue="q1"), COMPLETED, at=NOW + 1)
    settle(store, make_job("dead", queue="q2"), DEAD, at=NOW + 1)
    settle(store, make_job("stopped", queue="q3"), CANCELLED, at=NOW + 1)

    assert store.claim("w1", None, NOW + 10_000, LEASE, limit=10) == []


# --- heartbeat ----------------------------------------------------------------------------------


def test_heartbeat_extends_the_lease_and_saves_output(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("long"))
    job = claim_one(store, "w1")

    assert lifecycle.heartbeat(store, "w1", [(lease_of(job), "line 1\n")], NOW + 20, LEASE) == set()
    after = job_of(store, "long")
    assert after.lease_expires_at == NOW + 20 + LEASE
    assert after.output == "line 1\n"
    assert store.expired(NOW + LEASE + 1) == []  # the original lease end has passed

    # no output this time: what was saved stays
    assert lifecycle.heartbeat(store, "w1", [(lease_of(job), None)], NOW + 25, LEASE) == set()
    after = job_of(store, "long")
    assert after.lease_expires_at == NOW + 25 + LEASE
    assert after.output == "line 1\n"
    assert (after.state, after.locked_by, after.attempts) == (PROCESSING, "w1", 1)


def test_heartbeat_without_beats_does_nothing(store: Store) -> None:
    assert lifecycle.heartbeat(store, "w1", [], NOW, LEASE) == set()


def test_heartbeat_reports_cancelled_finished_and_unknown_jobs_as_lost(store: Store, make_job: MakeJob) -> None:
    # Given four jobs held by w1: one kept, one cancelled, one finished; and one id never enqueued
    lifecycle.enqueue(
        store, [make_job(name, created_at=NOW - n) for n, name in enumerate(["held", "cancelled", "finished"])]
    )
    held = {job.id: job for job in store.claim("w1", None, NOW, LEASE, limit=3)}
    lifecycle.cancel(store, "cancelled", NOW + 1)
    assert lifecycle.finish(store, lease_of(held["finished"]), Outcome(COMPLETED, NOW + 2, exit_code=0))
    beats: list[tuple[Lease, str | None]] = [(lease_of(job), "out") for job in held.values()]
    beats.append((Lease("ghost", "w1", 1), "out"))

    # When w1 heartbeats them all
    lost = lifecycle.heartbeat(store, "w1", beats, NOW + 10, LEASE)

    # Then all but the held one are lost, and nothing was written to them
    assert lost == {"cancelled", "finished", "ghost"}
    assert job_of(store, "held").lease_expires_at == NOW + 10 + LEASE
    cancelled, finished = job_of(store, "cancelled"), job_of(store, "finished")
    assert (cancelled.state, cancelled.lease_expires_at, cancelled.output) == (CANCELLED, None, None)
    assert (finished.state, finished.lease_expires_at, finished.output) == (COMPLETED, None, None)
    assert store.get("ghost") is None


def test_heartbeat_of_a_recovered_and_retaken_job_is_lost_for_the_old_lease(store: Store, make_job: MakeJob) -> None:
    # Given w1's lease on "j" expired, the job was recovered and w2 took it (attempt 2)
    lifecycle.enqueue_job(store, make_job("j", max_retries=3))
    old = claim_one(store, "w1", lease=5)
    assert lifecycle.recover_expired(store, RuntimeConfig(backoff_base=2, backoff_jitter=0.0), NOW + 10) == ["j"]
    assert lifecycle.heartbeat(store, "w1", [(lease_of(old), "late output")], NOW + 11, LEASE) == {"j"}
    new = claim_one(store, "w2", now=NOW + 12)  # run_at = NOW + 10 + 2**1
    assert (new.attempts, new.lease_expires_at) == (2, NOW + 12 + LEASE)

    # Then beats on the old attempt, or on the right attempt under the wrong worker, are lost
    assert lifecycle.heartbeat(store, "w1", [(lease_of(old), "late output")], NOW + 13, LEASE) == {"j"}
    assert lifecycle.heartbeat(store, "w1", [(Lease("j", "w1", 2), "late output")], NOW + 13, LEASE) == {"j"}
    assert lifecycle.heartbeat(store, "w2", [(Lease("j", "w2", 3), "late output")], NOW + 13, LEASE) == {"j"}
    job = job_of(store, "j")
    assert (job.locked_by, job.attempts, job.lease_expires_at) == ("w2", 2, NOW + 12 + LEASE)
    assert job.output is None
    # and the current holder's beat holds
    assert lifecycle.heartbeat(store, "w2", [(lease_of(new), "fresh")], NOW + 14, LEASE) == set()
    assert job_of(store, "j").output == "fresh"


def test_heartbeat_of_many_jobs_reports_only_the_lost_ones(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job(f"j{n}", created_at=NOW - n) for n in range(3)])
    jobs = store.claim("w1", None, NOW, LEASE, limit=3)
    lifecycle.cancel(store, "j1", NOW + 1)

    lost = lifecycle.heartbeat(store, "w1", [(lease_of(job), f"out {job.id}") for job in jobs], NOW + 5, LEASE)

    assert lost == {"j1"}
    for kept in ("j0", "j2"):
        job = job_of(store, kept)
        assert (job.lease_expires_at, job.output) == (NOW + 5 + LEASE, f"out {kept}")


# --- finish -------------------------------------------------------------------------------------


def test_finish_records_a_completed_attempt(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("ok"))
    job = claim_one(store)
    lifecycle.heartbeat(store, "w1", [(lease_of(job), "partial")], NOW + 2, LEASE)

    assert lifecycle.finish(store, lease_of(job), Outcome(COMPLETED, NOW + 5, exit_code=0, output="hi\n", duration=4.5))

    done = job_of(store, "ok")
    assert done.state == COMPLETED
    assert (done.finished_at, done.updated_at) == (NOW + 5, NOW + 5)
    assert (done.locked_by, done.lease_expires_at) == (None, None)
    assert (done.exit_code, done.output, done.duration, done.last_error) == (0, "hi\n", 4.5, None)
    assert (done.attempts, done.run_at, done.started_at) == (1, NOW, NOW)


def test_finish_without_output_keeps_the_output_saved_by_heartbeats(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("ok"))
    job = claim_one(store)
    lifecycle.heartbeat(store, "w1", [(lease_of(job), "so far")], NOW + 2, LEASE)

    assert lifecycle.finish(store, lease_of(job), Outcome(COMPLETED, NOW + 5, exit_code=0))

    assert job_of(store, "ok").output == "so far"


def test_finish_records_a_failed_attempt_for_a_later_retry(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("bad"))
    job = claim_one(store)

    assert lifecycle.finish(
        store,
        lease_of(job),
        Outcome(FAILED, NOW + 3, run_at=NOW + 13, exit_code=2, last_error="exit code 2", duration=3.0),
    )

    failed = job_of(store, "bad")
    assert (failed.state, failed.run_at, failed.attempts) == (FAILED, NOW + 13, 1)
    assert (failed.exit_code, failed.last_error, failed.duration) == (2, "exit code 2", 3.0)
    assert failed.finished_at is None  # not finished: it will run again
    assert (failed.locked_by, failed.lease_expires_at) == (None, None)


def test_finish_can_hand_a_job_back_undoing_the_attempt(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("handed-back"))
    job = claim_one(store)

    assert lifecycle.finish(store, lease_of(job), Outcome(PENDING, NOW + 1, attempts=0))

    back = job_of(store, "handed-back")
    assert (back.state, back.attempts, back.locked_by, back.finished_at) == (PENDING, 0, None, None)
    assert claim_one(store, "w2", now=NOW + 2).attempts == 1


def test_finish_is_fenced_on_the_worker_and_attempt(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("j"))
    job = claim_one(store, "w1")
    before = job_of(store, "j")
    outcome = Outcome(COMPLETED, NOW + 5, exit_code=0, output="not mine")

    assert lifecycle.finish(store, Lease("j", "w2", 1), outcome) is False  # wrong worker
    assert lifecycle.finish(store, Lease("j", "w1", 2), outcome) is False  # an attempt not made yet
    assert lifecycle.finish(store, Lease("ghost", "w1", 1), outcome) is False  # unknown job
    assert job_of(store, "j") == before

    assert lifecycle.finish(store, lease_of(job), Outcome(COMPLETED, NOW + 6, exit_code=0, output="mine"))
    assert lifecycle.finish(store, lease_of(job), Outcome(FAILED, NOW + 7, run_at=NOW + 8)) is False  # twice
    done = job_of(store, "j")
    assert (done.state, done.output, done.finished_at) == (COMPLETED, "mine", NOW + 6)


def test_finish_of_a_stale_attempt_writes_nothing(store: Store, make_job: MakeJob) -> None:
    # Given w1's attempt 1 was recovered and w2 now runs attempt 2
    lifecycle.enqueue_job(store, make_job("j", max_retries=3))
    old = claim_one(store, "w1", lease=5)
    lifecycle.recover_expired(store, RuntimeConfig(backoff_base=2, backoff_jitter=0.0), NOW + 10)
    new = claim_one(store, "w2", now=NOW + 12)
    before = job_of(store, "j")

    # When w1 (the presumed-dead worker) reports its result late
    late = lifecycle.finish(store, lease_of(old), Outcome(COMPLETED, NOW + 13, exit_code=0, output="late"))

    # Then it is refused and attempt 2 is untouched
    assert late is False
    assert job_of(store, "j") == before
    assert lifecycle.finish(store, lease_of(new), Outcome(COMPLETED, NOW + 14, exit_code=0))


def test_finish_of_a_cancelled_job_is_refused(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("j"))
    job = claim_one(store)
    lifecycle.cancel(store, "j", NOW + 1)

    assert lifecycle.finish(store, lease_of(job), Outcome(COMPLETED, NOW + 2, exit_code=0, output="x")) is False

    after = job_of(store, "j")
    assert (after.state, after.output, after.exit_code) == (CANCELLED, None, None)


def test_finish_with_expired_before_requires_the_lease_to_have_ended(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("j"))
    job = claim_one(store, lease=LEASE)  # lease ends at NOW + 30
    before = job_of(store, "j")
    recovered = Outcome(FAILED, NOW + 40, run_at=NOW + 42, last_error="lease expired")

    assert lifecycle.finish(store, lease_of(job), recovered, expired_before=NOW + LEASE - 0.1) is False
    assert job_of(store, "j") == before

    assert lifecycle.finish(store, lease_of(job), recovered, expired_before=NOW + LEASE) is True  # <=
    assert job_of(store, "j").state == FAILED


# --- expired ------------------------------------------------------------------------------------


def test_expired_lists_processing_jobs_whose_lease_ended(store: Store, make_job: MakeJob) -> None:
    # Given leases ending at NOW+30 and NOW+60, and jobs that are not processing
    settle(store, make_job("done", queue="q0", created_at=NOW - 50), COMPLETED, at=NOW - 40)
    lifecycle.enqueue(
        store,
        [
            make_job("short", queue="q1", created_at=NOW - 3),
            make_job("long", queue="q2", created_at=NOW - 2),
            make_job("waiting", queue="q3", created_at=NOW - 1, run_at=NOW + 10_000),
        ],
    )
    claim_one(store, "w1", ["q1"], lease=30)
    claim_one(store, "w2", ["q2"], lease=60)

    # Then only ended leases are listed, as full jobs
    assert store.expired(NOW + 30) == []  # ended *before* now
    [short] = store.expired(NOW + 31)
    assert (short.id, short.locked_by, short.attempts, short.state) == ("short", "w1", 1, PROCESSING)
    assert sorted(ids(store.expired(NOW + 61))) == ["long", "short"]
    assert len(store.expired(NOW + 61, limit=1)) == 1


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_a_pending_job(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("j"))

    cancelled = lifecycle.cancel(store, "j", NOW + 5)

    assert (cancelled.id, cancelled.state, cancelled.finished_at) == ("j", CANCELLED, NOW + 5)
    assert job_of(store, "j") == cancelled
    assert store.claim("w1", None, NOW + 10, LEASE) == []


def test_cancel_a_failed_job_waiting_for_its_retry(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("j"), FAILED, at=NOW + 1, run_at=NOW + 5)

    assert lifecycle.cancel(store, "j", NOW + 2).state == CANCELLED
    assert store.claim("w1", None, NOW + 10, LEASE) == []


def test_cancel_a_processing_job_makes_its_worker_lose_it(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("j"))
    job = claim_one(store, "w1")

    cancelled = lifecycle.cancel(store, "j", NOW + 5)

    assert (cancelled.state, cancelled.locked_by, cancelled.lease_expires_at) == (CANCELLED, None, None)
    assert lifecycle.heartbeat(store, "w1", [(lease_of(job), "out")], NOW + 6, LEASE) == {"j"}
    assert store.expired(NOW + 10_000) == []  # nothing for recovery to take back
    assert job_of(store, "j").state == CANCELLED


@pytest.mark.parametrize("state", [COMPLETED, DEAD, CANCELLED])
def test_cancel_a_finished_job_is_a_conflict(store: Store, make_job: MakeJob, state: str) -> None:
    before = settle(store, make_job("j"), state, at=NOW + 1)

    with pytest.raises(Conflict, match="j"):
        lifecycle.cancel(store, "j", NOW + 2)

    assert job_of(store, "j") == before


def test_cancel_an_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="nope"):
        lifecycle.cancel(store, "nope", NOW)


# --- retry_dead ---------------------------------------------------------------------------------


def test_retry_dead_moves_one_dead_job_back_to_pending(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("dead-1", queue="q1"), DEAD, at=NOW + 1)
    settle(store, make_job("dead-2", queue="q2"), DEAD, at=NOW + 1)

    assert lifecycle.retry_dead(store, "dead-1", NOW + 100) == 1

    job = job_of(store, "dead-1")
    assert (job.state, job.attempts, job.run_at, job.finished_at) == (PENDING, 0, NOW + 100, None)
    assert (job.locked_by, job.lease_expires_at) == (None, None)
    assert job_of(store, "dead-2").state == DEAD
    assert claim_one(store, now=NOW + 100).attempts == 1


def test_retry_dead_without_an_id_retries_every_dead_job(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("dead-1", queue="q1"), DEAD, at=NOW + 1)
    settle(store, make_job("dead-2", queue="q2"), DEAD, at=NOW + 1)
    settle(store, make_job("done", queue="q3"), COMPLETED, at=NOW + 1)

    assert lifecycle.retry_dead(store, None, NOW + 100) == 2

    assert [job_of(store, i).state for i in ("dead-1", "dead-2", "done")] == [PENDING, PENDING, COMPLETED]
    assert lifecycle.retry_dead(store, None, NOW + 200) == 0


def test_retry_dead_of_an_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="nope"):
        lifecycle.retry_dead(store, "nope", NOW)


@pytest.mark.parametrize("state", [PENDING, FAILED, COMPLETED, CANCELLED])
def test_retry_dead_of_a_job_that_is_not_dead_is_a_conflict(store: Store, make_job: MakeJob, state: str) -> None:
    job = make_job("j")
    if state == PENDING:
        lifecycle.enqueue_job(store, job)
    else:
        settle(store, job, state, NOW + 1)
    before = job_of(store, "j")

    with pytest.raises(Conflict, match="j"):
        lifecycle.retry_dead(store, "j", NOW + 2)

    assert job_of(store, "j") == before


def test_retry_dead_twice_retries_once(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("j"), DEAD, at=NOW + 1)

    assert lifecycle.retry_dead(store, "j", NOW + 2) == 1
    with pytest.raises(Conflict):
        lifecycle.retry_dead(store, "j", NOW + 3)
    assert job_of(store, "j").run_at == NOW + 2


# --- purge --------------------------------------------------------------------------------------


def test_purge_deletes_only_the_given_states(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("done", queue="q1"), COMPLETED, at=NOW + 1)
    settle(store, make_job("dead", queue="q2"), DEAD, at=NOW + 1)
    settle(store, make_job("cancelled", queue="q3"), CANCELLED, at=NOW + 1)
    lifecycle.enqueue(store, [make_job("pending", queue="q4"), make_job("running", queue="q5")])
    claim_one(store, queues=["q5"])

    assert store.purge([DEAD]) == 1
    assert store.purge([DEAD]) == 0
    assert store.purge([COMPLETED, CANCELLED]) == 2

    assert sorted(ids(store.list_jobs())) == ["pending", "running"]


def test_purge_with_finished_before_keeps_the_newer_jobs(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("old", queue="q1"), COMPLETED, at=NOW + 100)
    settle(store, make_job("edge", queue="q2"), COMPLETED, at=NOW + 150)
    settle(store, make_job("new", queue="q3"), COMPLETED, at=NOW + 200)

    assert store.purge([COMPLETED], finished_before=NOW + 150) == 1  # strictly before

    assert sorted(ids(store.list_jobs())) == ["edge", "new"]
    assert store.purge([COMPLETED], finished_before=NOW + 150.5) == 1
    assert ids(store.list_jobs()) == ["new"]


# --- get, list_jobs, counts ---------------------------------------------------------------------


def test_get_an_unknown_id_is_none(store: Store) -> None:
    assert store.get("nope") is None


def test_list_jobs_is_newest_first_and_limited(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job(f"j{n}", created_at=NOW + n) for n in (3, 1, 5, 2, 4)])

    assert ids(store.list_jobs()) == ["j5", "j4", "j3", "j2", "j1"]
    assert ids(store.list_jobs(limit=2)) == ["j5", "j4"]


def test_list_jobs_filters_by_state_and_queue(store: Store, make_job: MakeJob) -> None:
    # Given jobs in queues a and b, in states pending, processing and completed
    settle(store, make_job("a-done", queue="a", created_at=NOW - 10), COMPLETED, at=NOW - 5)
    lifecycle.enqueue(
        store,
        [
            make_job("a-run", queue="a", created_at=NOW - 4),
            make_job("a-wait", queue="a", created_at=NOW - 3, run_at=NOW + 1000),
            make_job("b-run", queue="b", created_at=NOW - 2),
            make_job("b-wait", queue="b", created_at=NOW - 1, run_at=NOW + 1000),
        ],
    )
    store.claim("w1", None, NOW, LEASE, limit=5)

    # Then each filter returns just its jobs, newest first
    assert ids(store.list_jobs(state=PENDING)) == ["b-wait", "a-wait"]
    assert ids(store.list_jobs(state=PROCESSING)) == ["b-run", "a-run"]
    assert ids(store.list_jobs(queue="a")) == ["a-wait", "a-run", "a-done"]
    assert ids(store.list_jobs(state=COMPLETED, queue="a")) == ["a-done"]
    assert ids(store.list_jobs(state=PENDING, queue="b", limit=1)) == ["b-wait"]
    assert store.list_jobs(state=DEAD) == []
    assert store.list_jobs(queue="nope") == []


def test_counts_per_queue_and_state(store: Store, make_job: MakeJob) -> None:
    assert store.counts() == {}
    settle(store, make_job("b-done", queue="b"), COMPLETED, at=NOW + 1)
    lifecycle.enqueue(store, [make_job(f"a{n}", queue="a", created_at=NOW - n) for n in range(3)])
    claim_one(store, queues=["a"])

    assert store.counts() == {"a": {PENDING: 2, PROCESSING: 1}, "b": {COMPLETED: 1}}
    store.purge([COMPLETED])
    assert store.counts() == {"a": {PENDING: 2, PROCESSING: 1}}


# --- throughput, recent_failures, duration_totals -----------------------------------------------


def test_throughput_counts_ended_attempts_per_bucket(store: Store, make_job: MakeJob) -> None:
    assert store.throughput(since=0.0) == {"completed": {}, "failed": {}}
    # Given (bucket 60 s) completions at 1205, 1210, 1270 and one before `since`
    settle(store, make_job("c-old", queue="q1"), COMPLETED, at=1100.0)
    settle(store, make_job("c1", queue="q2"), COMPLETED, at=1205.0)
    settle(store, make_job("c2", queue="q3"), COMPLETED, at=1210.0)
    settle(store, make_job("c3", queue="q4"), COMPLETED, at=1270.0)
    # and failures: one failed at 1230, one dead at 1290, one that failed at 1215 and again at 1280
    settle(store, make_job("f", queue="q5"), FAILED, at=1230.0)
    settle(store, make_job("d", queue="q6"), DEAD, at=1290.0)
    settle(store, make_job("twice", queue="q7", max_retries=5), FAILED, at=1215.0, run_at=1216.0)
    again = claim_one(store, queues=["q7"], now=1216.0)
    assert lifecycle.finish(store, lease_of(again), Outcome(FAILED, 1280.0, run_at=1300.0, last_error="x"))
    lifecycle.enqueue_job(store, make_job("pending", queue="q8"))

    result = store.throughput(since=1200.0, bucket=60.0)

    # Then completions count by finished_at, failures once each by their latest update
    assert result == {"completed": {20: 2, 21: 1}, "failed": {20: 1, 21: 2}}


def test_recent_failures_are_failed_and_dead_jobs_latest_first(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("f-old", queue="q1"), FAILED, at=NOW + 10)
    settle(store, make_job("d", queue="q2"), DEAD, at=NOW + 30)
    settle(store, make_job("f-new", queue="q3"), FAILED, at=NOW + 40)
    settle(store, make_job("ok", queue="q4"), COMPLETED, at=NOW + 50)
    settle(store, make_job("x", queue="q5"), CANCELLED, at=NOW + 60)
    lifecycle.enqueue_job(store, make_job("pending", queue="q6"))

    assert ids(store.recent_failures()) == ["f-new", "d", "f-old"]
    assert ids(store.recent_failures(limit=2)) == ["f-new", "d"]


def test_duration_totals_sum_the_completed_jobs(store: Store, make_job: MakeJob) -> None:
    assert store.duration_totals() == (0, 0.0)
    settle(store, make_job("c1", queue="q1"), COMPLETED, at=NOW + 1, duration=1.5)
    settle(store, make_job("c2", queue="q2"), COMPLETED, at=NOW + 1, duration=2.25)
    settle(store, make_job("f", queue="q3"), FAILED, at=NOW + 1, duration=100.0)
    settle(store, make_job("d", queue="q4"), DEAD, at=NOW + 1, duration=100.0)

    count, total = store.duration_totals()

    assert (count, total) == (2, pytest.approx(3.75))


# --- next_due -----------------------------------------------------------------------------------


def test_next_due_is_the_earliest_run_at_of_a_claimable_job(store: Store, make_job: MakeJob) -> None:
    assert store.next_due(None) is None
    # Given: failed in b (retry at 1200), pending in a at 1500, and earlier non-claimable jobs
    settle(store, make_job("b-failed", queue="b"), FAILED, at=NOW + 1, run_at=1200.0)
    settle(store, make_job("c-done", queue="c"), COMPLETED, at=NOW + 1)
    lifecycle.enqueue(
        store, [make_job("a-later", queue="a", run_at=1500.0), make_job("d-running", queue="d", run_at=NOW)]
    )
    claim_one(store, queues=["d"])

    assert store.next_due(None) == 1200.0
    assert store.next_due(["a"]) == 1500.0
    assert store.next_due(["a", "b"]) == 1200.0
    assert store.next_due(["c", "d"]) is None
    assert store.next_due(["nope"]) is None


# --- config -------------------------------------------------------------------------------------


def test_config_values_are_stored_strings(store: Store) -> None:
    assert config_service.config_values(store) == {}

    config_service.set_config(store, "max-retries", "5")
    config_service.set_config(store, "lease", "60")
    config_service.set_config(store, "max-retries", "7")

    assert config_service.config_values(store) == {"max-retries": "7", "lease": "60"}
    assert config_service.load_config(store).max_retries == 7


# --- workers ------------------------------------------------------------------------------------


def test_register_and_list_workers_newest_first(store: Store) -> None:
    old, new = worker_info("w-old", 100.0), worker_info("w-new", 200.0)
    worker_service.register_worker(store, old)
    worker_service.register_worker(store, new)

    assert worker_service.list_workers(store) == [new, old]


def test_register_worker_replaces_a_worker_with_the_same_id(store: Store) -> None:
    worker_service.register_worker(store, worker_info("w1", 100.0))
    replacement = worker_info("w1", 300.0, state="stopping")

    worker_service.register_worker(store, replacement)

    assert worker_service.list_workers(store) == [replacement]


def test_beat_worker_records_the_beat_and_returns_the_stop_flag(store: Store) -> None:
    worker_service.register_worker(store, worker_info("w1", 100.0))

    assert worker_service.beat_worker(store, "w1", 150.0, "running", ["j1", "j2"]) is False
    [info] = worker_service.list_workers(store)
    assert (info.last_heartbeat, info.state, info.current_jobs) == (150.0, "running", ["j1", "j2"])

    assert worker_service.request_stop(store) == 1
    assert worker_service.beat_worker(store, "w1", 160.0, "stopping", []) is True
    [info] = worker_service.list_workers(store)
    assert (info.last_heartbeat, info.state, info.current_jobs, info.stop_requested) == (160.0, "stopping", [], True)


def test_beat_worker_of_an_unknown_worker_is_false(store: Store) -> None:
    assert worker_service.beat_worker(store, "ghost", 150.0, "running", []) is False
    assert worker_service.list_workers(store) == []


def test_request_stop_asks_running_workers_only(store: Store) -> None:
    worker_service.register_worker(store, worker_info("r1", 100.0))
    worker_service.register_worker(store, worker_info("r2", 101.0))
    worker_service.register_worker(store, worker_info("gone", 102.0, state="stopped"))

    assert worker_service.request_stop(store, ["r1"]) == 1
    assert {w.id: w.stop_requested for w in worker_service.list_workers(store)} == {
        "r1": True,
        "r2": False,
        "gone": False,
    }
    assert worker_service.request_stop(store, ["gone"]) == 0
    assert worker_service.request_stop(store, ["r2", "ghost"]) == 1
    assert {w.id: w.stop_requested for w in worker_service.list_workers(store)} == {
        "r1": True,
        "r2": True,
        "gone": False,
    }


def test_request_stop_of_all_workers(store: Store) -> None:
    worker_service.register_worker(store, worker_info("r1", 100.0))
    worker_service.register_worker(store, worker_info("r2", 101.0, state="stopping"))
    worker_service.register_worker(store, worker_info("gone", 102.0, state="stopped"))

    assert worker_service.request_stop(store) == 2

    assert worker_service.beat_worker(store, "r1", 110.0, "running", []) is True
    assert worker_service.beat_worker(store, "r2", 110.0, "stopping", []) is True


def test_request_stop_counts_a_worker_asked_before(store: Store) -> None:
    worker_service.register_worker(store, worker_info("r1", 100.0))

    assert worker_service.request_stop(store) == 1
    assert worker_service.request_stop(store) == 1  # still running, asked again
    assert worker_service.request_stop(store, ["r1"]) == 1


def test_prune_workers_forgets_stopped_and_silent_workers(store: Store) -> None:
    worker_service.register_worker(store, worker_info("stopped", 100.0, state="stopped", last_heartbeat=990.0))
    worker_service.register_worker(store, worker_info("silent", 100.0, last_heartbeat=500.0))
    worker_service.register_worker(store, worker_info("alive", 100.0, last_heartbeat=990.0))

    assert worker_service.prune_workers(store, seen_before=900.0) == 2

    assert [w.id for w in worker_service.list_workers(store)] == ["alive"]
    assert worker_service.prune_workers(store, seen_before=900.0) == 0


# --- service rules on each backend: recovery, retries and backoff ------------------------------


def test_recover_expired_fails_the_job_with_a_backoff(store: Store, make_job: MakeJob) -> None:
    # Given a job whose worker stopped heartbeating (lease ended at NOW+30), backoff base 3
    config_service.set_config(store, "backoff-base", "3")
    config_service.set_config(store, "backoff-jitter", "0")  # exact delays, to compare
    config = config_service.load_config(store)
    lifecycle.enqueue_job(store, make_job("orphan", max_retries=2))
    claim_one(store, "w-dead", lease=LEASE)

    # When recovery runs just after the lease ended
    assert lifecycle.recover_expired(store, config, NOW + 31) == ["orphan"]

    # Then the attempt counts as failed, retried after 3**1 seconds
    job = job_of(store, "orphan")
    assert (job.state, job.attempts, job.run_at) == (FAILED, 1, NOW + 31 + 3)
    assert (job.locked_by, job.lease_expires_at, job.finished_at) == (None, None, None)
    assert "lease expired" in (job.last_error or "") and "w-dead" in (job.last_error or "")
    assert store.expired(NOW + 10_000) == []
    assert store.claim("w2", None, NOW + 33.9, LEASE) == []
    assert claim_one(store, "w2", now=NOW + 34).attempts == 2


def test_recover_expired_sends_a_job_out_of_retries_to_the_dlq(store: Store, make_job: MakeJob) -> None:
    config = RuntimeConfig(backoff_base=2, backoff_jitter=0.0)
    lifecycle.enqueue_job(store, make_job("orphan", max_retries=1))
    claim_one(store, "w1", lease=10)
    assert lifecycle.recover_expired(store, config, NOW + 11) == ["orphan"]  # attempt 1: retry
    claim_one(store, "w2", now=NOW + 13, lease=10)

    assert lifecycle.recover_expired(store, config, NOW + 24) == ["orphan"]  # attempt 2: dead

    job = job_of(store, "orphan")
    assert (job.state, job.attempts, job.finished_at, job.locked_by) == (DEAD, 2, NOW + 24, None)
    assert ids(store.list_jobs(state=DEAD)) == ["orphan"]


def test_recover_expired_leaves_a_job_whose_lease_was_extended(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("alive"))
    job = claim_one(store, "w1", lease=LEASE)
    assert lifecycle.heartbeat(store, "w1", [(lease_of(job), None)], NOW + 20, LEASE) == set()

    assert lifecycle.recover_expired(store, RuntimeConfig(), NOW + LEASE + 1) == []

    after = job_of(store, "alive")
    assert (after.state, after.locked_by, after.lease_expires_at) == (PROCESSING, "w1", NOW + 20 + LEASE)


def test_recover_expired_loses_the_race_to_a_late_heartbeat(
    store: Store, make_job: MakeJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given recovery read the expired jobs, and the worker heartbeat right after that read
    lifecycle.enqueue_job(store, make_job("slow"))
    job = claim_one(store, "w1", lease=LEASE)
    snapshot = store.expired(NOW + 31)
    assert ids(snapshot) == ["slow"]
    assert lifecycle.heartbeat(store, "w1", [(lease_of(job), "still here")], NOW + 31, LEASE) == set()
    monkeypatch.setattr(store, "expired", lambda now, limit=100: snapshot)

    # When recovery goes on with its stale list
    recovered = lifecycle.recover_expired(store, RuntimeConfig(), NOW + 31)

    # Then the fence on the lease end refuses it: the worker keeps its job
    assert recovered == []
    after = job_of(store, "slow")
    assert (after.state, after.locked_by, after.attempts) == (PROCESSING, "w1", 1)
    assert after.lease_expires_at == NOW + 31 + LEASE


def test_failure_outcomes_retry_with_growing_delays_then_go_dead(store: Store, make_job: MakeJob) -> None:
    config = RuntimeConfig(backoff_base=2.0, backoff_max=3600.0, backoff_jitter=0.0)
    lifecycle.enqueue_job(store, make_job("flaky", max_retries=2))
    now, run_ats = NOW, []
    for _ in range(3):
        job = claim_one(store, now=now)
        outcome = lifecycle.failure_outcome(job, config, now + 1, "exit code 1", exit_code=1)
        assert lifecycle.finish(store, lease_of(job), outcome)
        after = job_of(store, "flaky")
        run_ats.append((after.state, after.run_at - (now + 1)))
        now = after.run_at

    assert run_ats[:2] == [(FAILED, 2.0), (FAILED, 4.0)]
    job = job_of(store, "flaky")
    assert (job.state, job.attempts, job.last_error, job.exit_code) == (DEAD, 3, "exit code 1", 1)
    assert job.finished_at is not None


# --- service rules, pure ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "expected"), [(0, 1.0), (1, 2.0), (3, 8.0), (11, 2048.0), (12, 3600.0), (1000, 3600.0)]
)
def test_retry_delay_is_base_to_the_attempts_capped(attempts: int, expected: float) -> None:
    assert (
        lifecycle.retry_delay(attempts, RuntimeConfig(backoff_base=2.0, backoff_max=3600.0, backoff_jitter=0.0))
        == expected
    )


def test_retry_delay_that_overflows_is_the_cap() -> None:
    assert (
        lifecycle.retry_delay(10_000, RuntimeConfig(backoff_base=100.0, backoff_max=60.0, backoff_jitter=0.0)) == 60.0
    )


def test_retry_delay_cap_of_zero_retries_at_once() -> None:
    assert lifecycle.retry_delay(5, RuntimeConfig(backoff_base=3.0, backoff_max=0.0, backoff_jitter=0.0)) == 0.0


@pytest.mark.parametrize(
    ("attempts", "max_retries", "state", "delay"),
    [
        (1, 3, FAILED, 2.0),
        (3, 3, FAILED, 8.0),
        (4, 3, DEAD, None),
        (1, 0, DEAD, None),
    ],
)
def test_failure_outcome_retries_until_max_retries(
    make_job: MakeJob, attempts: int, max_retries: int, state: str, delay: float | None
) -> None:
    job = make_job("j", attempts=attempts, max_retries=max_retries)
    config = RuntimeConfig(backoff_base=2.0, backoff_max=3600.0, backoff_jitter=0.0)

    outcome = lifecycle.failure_outcome(job, config, NOW, "boom", exit_code=3, output="o", duration=1.0)

    assert outcome.state == state
    assert outcome.at == NOW
    assert outcome.run_at == (None if delay is None else NOW + delay)
    assert (outcome.last_error, outcome.exit_code, outcome.output, outcome.duration) == ("boom", 3, "o", 1.0)
    assert outcome.attempts is None  # a failure keeps the attempt counted


# === workflows: finish_and_claim, batched purge, waiting jobs, unique keys, hooks, schedules ====


def test_finish_and_claim_records_outcomes_then_claims(store: Store, make_job: MakeJob) -> None:
    # Given w1 holds "done" and "stale" (whose lease it lost), and "next" is pending
    lifecycle.enqueue(store, [make_job("done", created_at=NOW - 3), make_job("stale", created_at=NOW - 2)])
    held = {job.id: job for job in store.claim("w1", None, NOW, LEASE, limit=2)}
    lifecycle.cancel(store, "stale", NOW + 1)
    lifecycle.enqueue_job(store, make_job("next", created_at=NOW + 1))
    outcomes = [
        (lease_of(held["done"]), Outcome(COMPLETED, NOW + 5, exit_code=0)),
        (lease_of(held["stale"]), Outcome(COMPLETED, NOW + 5, exit_code=0)),
    ]

    # When it reports both and asks for more work in one call
    written, claimed = lifecycle.finish_and_claim(store, outcomes, "w1", None, NOW + 5, LEASE, limit=3)

    # Then only the held lease was written, and the pending job was claimed
    assert written == [True, False]
    assert job_of(store, "done").state == COMPLETED
    assert job_of(store, "stale").state == CANCELLED
    assert ids(claimed) == ["next"]
    assert (claimed[0].locked_by, claimed[0].lease_expires_at) == ("w1", NOW + 5 + LEASE)


def test_finish_and_claim_with_no_free_slot_claims_nothing(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("a", created_at=NOW - 1), make_job("b", created_at=NOW)])
    job = claim_one(store)

    written, claimed = lifecycle.finish_and_claim(
        store, [(lease_of(job), Outcome(COMPLETED, NOW + 1, exit_code=0))], "w1", None, NOW + 1, LEASE, limit=0
    )

    assert (written, claimed) == ([True], [])
    assert job_of(store, "b").state == PENDING


def test_purge_with_a_limit_deletes_in_batches(store: Store, make_job: MakeJob) -> None:
    for n in range(5):
        settle(store, make_job(f"c{n}", queue=f"q{n}"), COMPLETED, at=NOW + n)
    settle(store, make_job("late", queue="q9"), COMPLETED, at=NOW + 100)

    assert store.count_purgeable([COMPLETED], finished_before=NOW + 50) == 5
    assert store.count_purgeable([COMPLETED]) == 6
    assert store.count_purgeable([DEAD]) == 0
    assert store.purge([COMPLETED], finished_before=NOW + 50, limit=2) == 2
    assert store.count_purgeable([COMPLETED], finished_before=NOW + 50) == 3
    assert store.purge([COMPLETED], finished_before=NOW + 50, limit=2) == 2
    assert store.purge([COMPLETED], finished_before=NOW + 50, limit=2) == 1
    assert store.purge([COMPLETED], finished_before=NOW + 50, limit=2) == 0
    assert ids(store.list_jobs()) == ["late"]


# --- waiting on parents (after, on_failure_of) ---------------------------------------------------


def complete(store: Store, job_id: str, at: float, state: str = COMPLETED) -> None:
    """End ``job_id`` (pending in its own queue) in ``state`` through a real claim at ``at``."""
    job = job_of(store, job_id)
    claimed = claim_one(store, "w-parent", [job.queue], now=max(at - 1, job.run_at))
    assert claimed.id == job_id
    outcome = Outcome(state, at, exit_code=0 if state == COMPLETED else 1, run_at=at + 60 if state == FAILED else None)
    assert lifecycle.finish(store, lease_of(claimed), outcome)


def test_a_job_after_a_running_parent_waits_and_is_released_on_completion(store: Store, make_job: MakeJob) -> None:
    # Given a child enqueued after two parents, neither finished
    lifecycle.enqueue(store, [make_job("p1", queue="qp1"), make_job("p2", queue="qp2")])
    lifecycle.enqueue_job(store, make_job("child", queue="qc", after=["p1", "p2"], created_at=NOW + 1))
    assert job_of(store, "child").state == WAITING
    assert store.claim("w1", ["qc"], NOW + 10_000, LEASE) == []
    assert store.next_due(["qc"]) is None

    # When the first parent completes, it still waits; when the second does, it is released
    complete(store, "p1", NOW + 10)
    assert job_of(store, "child").state == WAITING
    complete(store, "p2", NOW + 20)

    child = job_of(store, "child")
    assert (child.state, child.run_at, child.after) == (PENDING, NOW + 20, ["p1", "p2"])
    assert claim_one(store, queues=["qc"], now=NOW + 20).id == "child"


def test_a_job_after_completed_parents_is_pending_at_once(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("p", queue="qp"))
    complete(store, "p", NOW + 5)

    lifecycle.enqueue_job(store, make_job("child", after=["p"], created_at=NOW + 6))

    assert job_of(store, "child").state == PENDING


def test_a_parent_in_the_same_batch_makes_the_child_wait(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("p", queue="qp"), make_job("child", queue="qc", after=["p"])])

    assert job_of(store, "child").state == WAITING
    complete(store, "p", NOW + 5)
    assert job_of(store, "child").state == PENDING


@pytest.mark.parametrize("parent_end", [DEAD, CANCELLED])
def test_a_parent_that_does_not_complete_cancels_its_waiting_jobs_transitively(
    store: Store, make_job: MakeJob, parent_end: str
) -> None:
    # Given extract <- child <- grandchild
    lifecycle.enqueue(
        store,
        [
            make_job("extract", queue="qp"),
            make_job("child", queue="qc", after=["extract"]),
            make_job("grandchild", queue="qg", after=["child"]),
        ],
    )

    # When extract ends dead or cancelled
    if parent_end == CANCELLED:
        lifecycle.cancel(store, "extract", NOW + 5)
    else:
        complete(store, "extract", NOW + 5, state=DEAD)

    # Then both descendants are cancelled, saying why
    for job_id in ("child", "grandchild"):
        job = job_of(store, job_id)
        assert (job.state, job.finished_at) == (CANCELLED, NOW + 5)
        assert "ended" in (job.last_error or "")
    assert "extract" in (job_of(store, "child").last_error or "")


def test_a_parent_that_fails_and_will_retry_keeps_its_children_waiting(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("p", queue="qp"), make_job("child", queue="qc", after=["p"])])

    complete(store, "p", NOW + 5, state=FAILED)

    assert job_of(store, "child").state == WAITING


@pytest.mark.parametrize("parent_end", [DEAD, CANCELLED])
def test_a_compensation_job_runs_when_its_parent_does_not_complete(
    store: Store, make_job: MakeJob, parent_end: str
) -> None:
    lifecycle.enqueue(store, [make_job("p", queue="qp"), make_job("undo", queue="qu", on_failure_of="p")])
    assert job_of(store, "undo").state == WAITING

    if parent_end == CANCELLED:
        lifecycle.cancel(store, "p", NOW + 5)
    else:
        complete(store, "p", NOW + 5, state=DEAD)

    assert job_of(store, "undo").state == PENDING


def test_a_compensation_job_is_cancelled_when_its_parent_completes(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("p", queue="qp"), make_job("undo", queue="qu", on_failure_of="p")])

    complete(store, "p", NOW + 5)

    undo = job_of(store, "undo")
    assert (undo.state, undo.finished_at) == (CANCELLED, NOW + 5)
    assert "not needed" in (undo.last_error or "")


def test_enqueue_after_a_missing_or_ended_parent_is_refused_and_inserts_nothing(
    store: Store, make_job: MakeJob
) -> None:
    settle(store, make_job("dead-parent", queue="qd"), DEAD, at=NOW + 1)
    settle(store, make_job("done-parent", queue="qc"), COMPLETED, at=NOW + 1)
    before = sorted(ids(store.list_jobs()))

    with pytest.raises(NotFound, match="nope"):  # exit 3, as for any unknown id
        lifecycle.enqueue(store, [make_job("ok"), make_job("orphan", after=["nope"])])
    with pytest.raises(Conflict, match="dead-parent"):
        lifecycle.enqueue(store, [make_job("ok"), make_job("doomed", after=["dead-parent"])])
    with pytest.raises(Conflict, match="done-parent"):
        lifecycle.enqueue_job(store, make_job("pointless", on_failure_of="done-parent"))

    assert sorted(ids(store.list_jobs())) == before


def test_a_waiting_job_can_be_cancelled_and_cancels_its_own_children(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(
        store,
        [
            make_job("p", queue="qp"),
            make_job("child", queue="qc", after=["p"]),
            make_job("grandchild", queue="qg", after=["child"]),
        ],
    )

    assert lifecycle.cancel(store, "child", NOW + 5).state == CANCELLED

    assert job_of(store, "grandchild").state == CANCELLED
    assert job_of(store, "p").state == PENDING


def test_finish_and_claim_can_claim_the_job_its_outcome_released(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("p", created_at=NOW - 1), make_job("child", after=["p"], created_at=NOW)])
    parent = claim_one(store)

    written, claimed = lifecycle.finish_and_claim(
        store, [(lease_of(parent), Outcome(COMPLETED, NOW + 5, exit_code=0))], "w1", None, NOW + 5, LEASE, limit=1
    )

    assert written == [True]
    assert ids(claimed) == ["child"]


def test_a_purged_completed_parent_does_not_block_its_waiting_job(store: Store, make_job: MakeJob) -> None:
    # Given a child after p1 and p2; p1 completed and was purged (e.g. by retention)
    lifecycle.enqueue(
        store,
        [make_job("p1", queue="qp1"), make_job("p2", queue="qp2"), make_job("child", queue="qc", after=["p1", "p2"])],
    )
    complete(store, "p1", NOW + 10)
    assert store.purge([COMPLETED], finished_before=NOW + 11) == 1

    # When p2 completes
    complete(store, "p2", NOW + 20)

    # Then the child is released
    assert job_of(store, "child").state == PENDING


def test_a_parent_completing_during_the_enqueue_of_its_child_still_releases_it(store: Store, make_job: MakeJob) -> None:
    # Given a running parent, and another handle on which its worker will report completion
    lifecycle.enqueue_job(store, make_job("p", queue="qp"))
    parent = claim_one(store, "w-parent", ["qp"])
    other = second_handle(store)
    reported: list[bool] = []
    worker = threading.Thread(
        target=lambda: reported.append(
            lifecycle.finish(other, lease_of(parent), Outcome(COMPLETED, NOW + 5, exit_code=0))
        )
    )

    # When the parent completes while the child's enqueue is in progress
    def jobs() -> Iterator[Job]:
        yield make_job("child", queue="qc", after=["p"], created_at=NOW + 1)
        worker.start()
        worker.join(timeout=0.3)  # SQLite: blocked until the enqueue commits; Mongo: done now

    lifecycle.enqueue(store, jobs())
    worker.join(timeout=30)

    # Then the child is released all the same
    assert reported == [True]
    assert job_of(store, "p").state == COMPLETED
    assert job_of(store, "child").state == PENDING
    if other is not store:
        other.close()


# --- unique keys --------------------------------------------------------------------------------


def test_a_unique_key_is_held_while_its_job_is_active(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue_job(store, make_job("first", queue="q1", unique_key="nightly-report"))

    with pytest.raises(Conflict, match="nightly-report"):
        lifecycle.enqueue(store, [make_job("other"), make_job("second", unique_key="nightly-report")])
    assert store.get("other") is None and store.get("second") is None

    # still held while processing and while failed (waiting for a retry)
    claimed = claim_one(store, queues=["q1"])
    with pytest.raises(Conflict):
        lifecycle.enqueue_job(store, make_job("second", unique_key="nightly-report"))
    assert lifecycle.finish(store, lease_of(claimed), Outcome(FAILED, NOW + 1, run_at=NOW + 60, last_error="x"))
    with pytest.raises(Conflict):
        lifecycle.enqueue_job(store, make_job("second", unique_key="nightly-report"))

    # free once it finished
    lifecycle.cancel(store, "first", NOW + 2)
    lifecycle.enqueue_job(store, make_job("second", unique_key="nightly-report"))
    assert job_of(store, "second").unique_key == "nightly-report"


@pytest.mark.parametrize("end", [COMPLETED, DEAD, CANCELLED])
def test_a_finished_job_frees_its_unique_key(store: Store, make_job: MakeJob, end: str) -> None:
    settle(store, make_job("first", unique_key="k"), end, at=NOW + 1)

    lifecycle.enqueue_job(store, make_job("second", unique_key="k"))

    assert job_of(store, "second").state == PENDING


def test_a_waiting_job_holds_its_unique_key(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("p", queue="qp"), make_job("child", after=["p"], unique_key="k")])

    with pytest.raises(Conflict, match="k"):
        lifecycle.enqueue_job(store, make_job("again", unique_key="k"))


def test_the_same_unique_key_twice_in_one_batch_inserts_nothing(store: Store, make_job: MakeJob) -> None:
    with pytest.raises(Conflict):
        lifecycle.enqueue(store, [make_job("a", unique_key="k"), make_job("b", unique_key="k")])

    assert store.list_jobs() == []
    lifecycle.enqueue_job(store, make_job("c", unique_key="k"))  # the key was not left taken


def test_retry_dead_refuses_while_its_unique_key_is_taken(store: Store, make_job: MakeJob) -> None:
    settle(store, make_job("old", queue="q1", unique_key="k"), DEAD, at=NOW + 1)
    lifecycle.enqueue_job(store, make_job("new", queue="q2", unique_key="k"))

    with pytest.raises(Conflict):
        lifecycle.retry_dead(store, "old", NOW + 2)

    assert job_of(store, "old").state == DEAD
    lifecycle.cancel(store, "new", NOW + 3)
    assert lifecycle.retry_dead(store, "old", NOW + 4) == 1
    with pytest.raises(Conflict):  # and the retried job holds the key again
        lifecycle.enqueue_job(store, make_job("newer", unique_key="k"))


# --- on-finish hooks ----------------------------------------------------------------------------


def test_a_hook_is_due_once_its_job_has_its_final_outcome(store: Store, make_job: MakeJob) -> None:
    # Given a job with a hook that fails once (retry) and then completes
    lifecycle.enqueue_job(store, make_job("j", on_finish="notify.sh", max_retries=3))
    lifecycle.enqueue_job(store, make_job("plain", queue="q2"))
    first = claim_one(store, queues=["default"])
    assert lifecycle.finish(store, lease_of(first), Outcome(FAILED, NOW + 1, run_at=NOW + 2, last_error="x"))
    assert job_of(store, "j").hook_state is None
    assert lifecycle.claim_hook(store, NOW + 1) is None  # not final yet

    second = claim_one(store, queues=["default"], now=NOW + 2)
    assert lifecycle.finish(store, lease_of(second), Outcome(COMPLETED, NOW + 3, exit_code=0))
    complete(store, "plain", NOW + 3)

    # Then its hook is taken exactly once, by one caller
    assert job_of(store, "j").hook_state == "due"
    hook = lifecycle.claim_hook(store, NOW + 4)
    assert hook is not None
    assert (hook.id, hook.state, hook.on_finish, hook.exit_code) == ("j", COMPLETED, "notify.sh", 0)
    assert lifecycle.claim_hook(store, NOW + 5) is None
    assert job_of(store, "plain").hook_state is None


@pytest.mark.parametrize("error", [None, "hook exited with 1: boom"])
def test_finish_hook_records_the_result_without_touching_the_job(
    store: Store, make_job: MakeJob, error: str | None
) -> None:
    settle(store, make_job("j", on_finish="notify.sh"), DEAD, at=NOW + 1)
    before = job_of(store, "j")
    assert getattr(lifecycle.claim_hook(store, NOW + 2), "id", None) == "j"

    lifecycle.finish_hook(store, "j", error, NOW + 3)

    after = job_of(store, "j")
    assert (after.hook_state, after.hook_error) == ("failed" if error else "done", error)
    assert (after.state, after.finished_at, after.updated_at) == (before.state, before.finished_at, before.updated_at)
    assert lifecycle.claim_hook(store, NOW + 4) is None


def test_hooks_of_cancelled_jobs_are_due_oldest_first(store: Store, make_job: MakeJob) -> None:
    # Given a parent with a hook, and a waiting child with a hook
    lifecycle.enqueue(
        store,
        [
            make_job("p", queue="qp", on_finish="h1"),
            make_job("child", queue="qc", after=["p"], on_finish="h2"),
            make_job("newer", queue="qn", on_finish="h3"),
        ],
    )
    lifecycle.cancel(store, "p", NOW + 5)  # cancels the child too
    lifecycle.cancel(store, "newer", NOW + 9)

    taken = [lifecycle.claim_hook(store, NOW + 10) for _ in range(4)]

    assert [job.id if job else None for job in taken[:2]] in (["p", "child"], ["child", "p"])
    assert [job.id if job else None for job in taken[2:]] == ["newer", None]


# --- cron schedules -----------------------------------------------------------------------------


def make_schedule(name: str, next_fire_at: float = NOW + 60, **fields: Any) -> Schedule:
    fields.setdefault("spec", {"command": f"./{name}.sh", "queue": "cron", "priority": 2})
    return Schedule(
        name=name, cron="* * * * *", tz="Europe/Berlin", next_fire_at=next_fire_at, created_at=NOW, **fields
    )


def test_schedules_are_listed_by_name_and_names_are_unique(store: Store) -> None:
    assert schedule_service.list_schedules(store) == []
    schedule_service.insert_schedule(store, make_schedule("zeta"))
    schedule_service.insert_schedule(store, make_schedule("alpha", spec={"command": "x", "env": {"A": "1"}}))

    with pytest.raises(Conflict, match="alpha"):
        schedule_service.insert_schedule(store, make_schedule("alpha"))

    assert schedule_service.list_schedules(store) == [
        make_schedule("alpha", spec={"command": "x", "env": {"A": "1"}}),
        make_schedule("zeta"),
    ]


def test_remove_schedule(store: Store) -> None:
    schedule_service.insert_schedule(store, make_schedule("a"))

    schedule_service.remove_schedule(store, "a")

    assert schedule_service.list_schedules(store) == []
    with pytest.raises(NotFound, match="a"):
        schedule_service.remove_schedule(store, "a")


def test_due_schedules_are_the_unpaused_ones_whose_time_has_come(store: Store) -> None:
    schedule_service.insert_schedule(store, make_schedule("early", next_fire_at=NOW - 5))
    schedule_service.insert_schedule(store, make_schedule("exact", next_fire_at=NOW))
    schedule_service.insert_schedule(store, make_schedule("later", next_fire_at=NOW + 5))
    schedule_service.insert_schedule(store, make_schedule("held", next_fire_at=NOW - 5, paused=True))

    assert [s.name for s in schedule_service.due_schedules(store, NOW)] == ["early", "exact"]

    schedule_service.set_schedule_paused(store, "early", True)
    assert [s.name for s in schedule_service.due_schedules(store, NOW)] == ["exact"]
    schedule_service.set_schedule_paused(store, "held", False, next_fire_at=NOW + 120)  # resumed: skips missed times
    assert [(s.name, s.paused, s.next_fire_at) for s in schedule_service.list_schedules(store) if s.name == "held"] == [
        ("held", False, NOW + 120)
    ]
    with pytest.raises(NotFound):
        schedule_service.set_schedule_paused(store, "nope", True)


def test_fire_schedule_enqueues_its_job_once_per_slot(store: Store, make_job: MakeJob) -> None:
    schedule_service.insert_schedule(store, make_schedule("tick", next_fire_at=NOW))
    job = make_job("tick-1", queue="cron", schedule="tick")

    assert schedule_service.fire_schedule(store, "tick", NOW, NOW + 60, job) is True

    [schedule] = schedule_service.list_schedules(store)
    assert (schedule.next_fire_at, schedule.last_fire_at) == (NOW + 60, NOW)
    assert (job_of(store, "tick-1").state, job_of(store, "tick-1").schedule) == (PENDING, "tick")
    assert schedule_service.due_schedules(store, NOW + 59) == []
    # the same slot again (a slower worker): refused, nothing changes
    assert schedule_service.fire_schedule(store, "tick", NOW, NOW + 60, make_job("tick-1b", queue="cron")) is False
    assert store.get("tick-1b") is None
    assert schedule_service.list_schedules(store) == [schedule]


def test_fire_schedule_of_a_paused_schedule_does_nothing(store: Store, make_job: MakeJob) -> None:
    schedule_service.insert_schedule(store, make_schedule("tick", next_fire_at=NOW, paused=True))

    assert schedule_service.fire_schedule(store, "tick", NOW, NOW + 60, make_job("tick-1")) is False

    assert store.get("tick-1") is None
    assert schedule_service.list_schedules(store)[0].next_fire_at == NOW


def test_fire_schedule_skips_the_slot_while_the_previous_run_holds_its_unique_key(
    store: Store, make_job: MakeJob
) -> None:
    schedule_service.insert_schedule(store, make_schedule("tick", next_fire_at=NOW))
    assert schedule_service.fire_schedule(store, "tick", NOW, NOW + 60, make_job("tick-1", unique_key="tick"))

    second = make_job("tick-2", unique_key="tick")
    assert schedule_service.fire_schedule(store, "tick", NOW + 60, NOW + 120, second) is False

    assert store.get("tick-2") is None
    assert schedule_service.list_schedules(store)[0].next_fire_at == NOW + 120  # moved on: no retry storm


def test_a_batch_that_fails_leaves_no_rows_behind_for_later_reads(store: Store, make_job: MakeJob) -> None:
    # Given a batch refused at its third job (a duplicate id), after a job that names an earlier one
    lifecycle.enqueue(store, [make_job("dup")])
    with pytest.raises(Conflict):
        lifecycle.enqueue(store, [make_job("a"), make_job("b", after=["a"]), make_job("dup")])
    # Then nothing of it is there, now or after the next reads and writes
    assert store.job_states(["a", "b"]) == {}
    lifecycle.enqueue(store, [make_job("c")])
    assert store.get("a") is None and store.get("b") is None
    assert sorted(job.id for job in store.list_jobs()) == ["c", "dup"]


def test_a_child_naming_one_parent_both_ways_is_cancelled_however_it_ends(store: Store, make_job: MakeJob) -> None:
    # after p AND compensation of p: it can never run; found in review to wait forever on a dead p
    lifecycle.enqueue(
        store,
        [
            make_job("p", max_retries=0),
            make_job("c", after=["p"], on_failure_of="p"),
            make_job("q", created_at=NOW + 0.5),
            make_job("d", after=["q"], on_failure_of="q"),
        ],
    )
    for job_id, state in (("p", DEAD), ("q", COMPLETED)):
        claimed = store.claim("w1", None, NOW + 1, LEASE, 1)[0]
        assert claimed.id == job_id
        lifecycle.finish(store, lease_of(claimed), Outcome(state, NOW + 2, exit_code=1 if state == DEAD else 0))
    c, d = store.get("c"), store.get("d")
    assert c is not None and c.state == CANCELLED and c.last_error == "parent job p ended dead"
    assert d is not None and d.state == CANCELLED and d.last_error == "not needed: q completed"


def test_one_job_is_inserted_in_one_write(store: Store, make_job: MakeJob) -> None:
    # a schedule's fire inserts one job: on MongoDB one insert_one, never a staged batch that a
    # crash between its two writes would leave hidden (and holding its id and unique key)
    if not store.transactional:
        calls: list[str] = []
        jobs = store._jobs  # type: ignore[attr-defined]  # the collection, watched
        for name in ("insert_one", "insert_many", "update_many"):
            original = getattr(jobs, name)

            def watched(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                calls.append(_name)
                return _original(*args, **kwargs)

            setattr(jobs, name, watched)
        store.insert_job(make_job("one", unique_key="k"))
        assert calls == ["insert_one"]
    else:
        store.insert_job(make_job("one", unique_key="k"))
    one = store.get("one")
    assert one is not None and one.state == PENDING
    with pytest.raises(Conflict):
        store.insert_job(make_job("two", unique_key="k"))
