"""Many callers at once: no job is claimed twice, a dead job is retried once, a schedule slot
fires once, a hook is taken once.

SQLite: the claim race runs real processes, each with its own connection to the same file (the
deployment it serves); the other races run threads, each with its own connection. PostgreSQL:
threads, each with its own connection (a store is one connection, like a worker's). Real MongoDB:
threads sharing one client (pymongo is thread-safe; each operation is one atomic update).
mongomock is skipped: it is in-process and its find_one_and_update is a find followed by a
separate update by ``_id``, so threads racing on it double-claim whatever queuectl does.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from typing import Any, Callable

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import Conflict
from queuectl.core.models import DEAD, PROCESSING, Job, Lease, Outcome, Schedule
from queuectl.service import schedules as schedule_service
from queuectl.store.base import Store
from queuectl.store.sql.postgres import PostgresStore
from queuectl.store.sql.sqlite import SqliteStore

NOW = 1000.0
LEASE = 600.0  # longer than any test: leases must not expire mid-race
JOBS = 300
CLAIMERS = 6
# each claimer's queue list: together they cover every queue, and they overlap
CLAIMER_QUEUES: list[list[str] | None] = [None, ["q0", "q1"], ["q2", "q0"], ["q1"], None, ["q2", "q1", "q0"]]
DEADLINE_S = 60.0
CLAIM_PAUSE_S = 0.001  # "starting the job": a claimer never drains the queue before the others wake
MONGOMOCK_REASON = (
    "mongomock is not thread-safe: its find_one_and_update is a find_one then an "
    "update by _id, so racing threads double-claim (observed)"
)


def backend_of(request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["store"]


def _claim_until_empty(path: str, worker_id: str, queues: list[str] | None, barrier: Any, results: Any) -> None:
    """Child process: open the queue, wait for every claimer, then claim until nothing is left."""
    store = SqliteStore(path)
    claimed: list[str] = []
    try:
        barrier.wait(timeout=DEADLINE_S)
        while True:
            jobs = store.claim(worker_id, queues, NOW, LEASE, limit=1 + len(claimed) % 3)
            if not jobs:
                break
            claimed.extend(job.id for job in jobs)
            time.sleep(CLAIM_PAUSE_S)
    finally:
        store.close()
        results.put((worker_id, claimed))


def _race_processes(path: str) -> dict[str, list[str]]:
    ctx = multiprocessing.get_context("spawn")  # no inherited connections or locks
    barrier, results = ctx.Barrier(CLAIMERS), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_until_empty, args=(path, f"w{n}", CLAIMER_QUEUES[n], barrier, results))
        for n in range(CLAIMERS)
    ]
    for proc in procs:
        proc.start()
    try:
        claimed = dict(results.get(timeout=DEADLINE_S) for _ in procs)  # before join: no pipe deadlock
        for proc in procs:
            proc.join(timeout=DEADLINE_S)
            assert proc.exitcode == 0, f"claimer process exited with {proc.exitcode}"
        return claimed
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


def _race_threads(store: Store, action: Callable[[int], Any]) -> dict[int, Any]:
    barrier = threading.Barrier(CLAIMERS)
    results: dict[int, Any] = {}

    def run(n: int) -> None:
        barrier.wait(timeout=DEADLINE_S)
        try:
            results[n] = action(n)
        except Exception as exc:  # reported per thread, checked by the test
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_S)
    assert len(results) == CLAIMERS, "a racing thread did not finish"
    return results


def test_racing_claimers_take_every_job_exactly_once(
    store: Store, make_job: Callable[..., Job], request: pytest.FixtureRequest
) -> None:
    backend = backend_of(request)
    if backend == "mongomock":
        pytest.skip(MONGOMOCK_REASON)
    # Given 300 jobs over three queues and six claimers with overlapping queue lists
    all_ids = [f"job-{n:03d}" for n in range(JOBS)]
    lifecycle.enqueue(
        store,
        (
            make_job(job_id, queue=f"q{n % 3}", priority=n % 4, created_at=NOW - JOBS + n)
            for n, job_id in enumerate(all_ids)
        ),
    )

    # When they all claim at once until the queue is empty
    if backend == "sqlite":
        assert isinstance(store, SqliteStore)
        claimed = _race_processes(store.path)
    else:

        def claim_all(handle: Store, n: int) -> list[str]:
            got: list[str] = []
            while jobs := handle.claim(f"w{n}", CLAIMER_QUEUES[n], NOW, LEASE, limit=1 + len(got) % 3):
                got.extend(job.id for job in jobs)
                time.sleep(CLAIM_PAUSE_S)
            return got

        claimed = {f"w{n}": ids for n, ids in _race_on_handles(store, claim_all).items()}

    # Then every job was claimed exactly once, by the worker that got it, on attempt 1
    for worker_id, got in claimed.items():
        assert not isinstance(got, Exception), f"{worker_id} failed: {got!r}"
    counts = Counter(job_id for got in claimed.values() for job_id in got)
    assert sorted(counts) == all_ids, "some jobs were never claimed"
    assert [job_id for job_id, n in counts.items() if n > 1] == [], "jobs claimed twice"
    owner = {job_id: worker_id for worker_id, got in claimed.items() for job_id in got}
    for job in store.list_jobs(limit=JOBS + 1):
        assert (job.state, job.attempts, job.locked_by) == (PROCESSING, 1, owner[job.id])
    assert sum(1 for got in claimed.values() if got) >= 2, "no contention: one claimer took everything"


def test_racing_retries_of_one_dead_job_retry_it_once(
    store: Store, make_job: Callable[..., Job], request: pytest.FixtureRequest
) -> None:
    backend = backend_of(request)
    if backend == "mongomock":
        pytest.skip(MONGOMOCK_REASON)
    # Given a dead job
    lifecycle.enqueue_job(store, make_job("dead-job", created_at=NOW))
    [job] = store.claim("w0", None, NOW, LEASE)
    assert lifecycle.finish(store, Lease(job.id, "w0", 1), Outcome(DEAD, NOW + 1, exit_code=1))

    # When six callers retry it at once
    results = _race_on_handles(store, lambda handle, n: lifecycle.retry_dead(handle, "dead-job", NOW + 2))

    # Then exactly one retried it and the others were told it is no longer dead
    outcomes = sorted(repr(r) for r in results.values())
    assert [r for r in results.values() if not isinstance(r, Conflict)] == [1], outcomes
    assert getattr(store.get("dead-job"), "state", None) == "pending"


def test_racing_fires_of_one_schedule_slot_enqueue_one_job(
    store: Store, make_job: Callable[..., Job], request: pytest.FixtureRequest
) -> None:
    if backend_of(request) == "mongomock":
        pytest.skip(MONGOMOCK_REASON)
    schedule_service.insert_schedule(
        store,
        Schedule(
            name="tick", cron="* * * * *", tz="UTC", spec={"command": "true"}, next_fire_at=NOW, created_at=NOW - 60
        ),
    )

    # every worker builds the slot's job with its own id, as if the deterministic id were not there
    results = _race_on_handles(
        store, lambda handle, n: schedule_service.fire_schedule(handle, "tick", NOW, NOW + 60, make_job(f"tick-w{n}"))
    )

    assert sorted(results.values(), key=repr) == [False] * (CLAIMERS - 1) + [True], results
    assert len(store.list_jobs()) == 1
    assert schedule_service.list_schedules(store)[0].next_fire_at == NOW + 60


def test_racing_hook_claims_take_a_hook_once(
    store: Store, make_job: Callable[..., Job], request: pytest.FixtureRequest
) -> None:
    if backend_of(request) == "mongomock":
        pytest.skip(MONGOMOCK_REASON)
    lifecycle.enqueue_job(store, make_job("j", on_finish="notify.sh"))
    lifecycle.cancel(store, "j", NOW + 1)

    results = _race_on_handles(store, lambda handle, n: lifecycle.claim_hook(handle, NOW + 2))

    taken = [r for r in results.values() if r is not None]
    assert [getattr(r, "id", r) for r in taken] == ["j"], results


def _race_on_handles(store: Store, action: Callable[[Store, int], Any]) -> dict[int, Any]:
    """Run ``action(handle, n)`` in CLAIMERS threads at once; SQL: one connection per thread."""
    handles: list[Store]
    if isinstance(store, SqliteStore):
        handles = [SqliteStore(store.path) for _ in range(CLAIMERS)]
    elif isinstance(store, PostgresStore):
        handles = [PostgresStore(store.url) for _ in range(CLAIMERS)]
    else:
        handles = [store] * CLAIMERS
    try:
        return _race_threads(store, lambda n: action(handles[n], n))
    finally:
        for handle in handles:
            if handle is not store:
                handle.close()
