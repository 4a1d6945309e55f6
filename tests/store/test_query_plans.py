"""Claims and listings are served by indexes, never by a scan of the whole jobs table.

SQLite: the statements the store really runs are captured (sqlite3's trace callback, with their
parameters expanded) and explained with ``SqliteStore.query_plan``. Real MongoDB: the winning plan
of ``MongoStore.explain_claim`` must be an index scan. mongomock has no query planner: skipped.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from queuectl.core import lifecycle
from queuectl.core.models import COMPLETED, Job, Lease, Outcome
from queuectl.service import queues as queue_service
from queuectl.store.base import Store
from queuectl.store.sql.postgres import PostgresStore
from queuectl.store.sql.sqlite import SqliteStore

NOW = 1000.0
LEASE = 30.0
MONGOMOCK_REASON = "mongomock has no query planner: explain() is not supported"


def backend_of(request: pytest.FixtureRequest) -> str:
    return request.node.callspec.params["store"]


@pytest.fixture
def filled(store: Store, make_job: Callable[..., Job]) -> Store:
    """Jobs in several queues and states, so that every statement has rows to consider."""
    lifecycle.enqueue(
        store, (make_job(f"j{n:03d}", queue=f"q{n % 3}", priority=n % 5, created_at=NOW - 200 + n) for n in range(120))
    )
    for job in store.claim("w1", None, NOW, LEASE, limit=40)[:20]:
        lifecycle.finish(store, Lease(job.id, "w1", job.attempts), Outcome(COMPLETED, NOW + 1, exit_code=0))
    return store


def statements_of(store: SqliteStore, action: Callable[[], Any]) -> list[str]:
    """The SQL statements ``action`` runs on ``store``'s connection, parameters expanded."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)  # test-only access: the plan must be of the real SQL
    try:
        action()
    finally:
        store._conn.set_trace_callback(None)
    # each statement a trigger runs (the counters') is traced again as the statement that fired it
    seen = [sql for n, sql in enumerate(seen) if n == 0 or sql != seen[n - 1]]
    if any("?" in sql for sql in seen):
        pytest.skip("this Python's sqlite3 traces statements without their parameters expanded")
    return [
        sql for sql in seen if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")) and " jobs " in f"{sql} "
    ]


def plan_of(store: SqliteStore, action: Callable[[], Any], marker: str) -> list[str]:
    """The query plan of the one statement of ``action`` that contains ``marker``."""
    matching = [sql for sql in statements_of(store, action) if marker in sql]
    assert len(matching) == 1, f"expected one statement with {marker!r}, got {matching}"
    return store.query_plan(matching[0])


def full_scans(plan: list[str]) -> list[str]:
    """Plan lines reading the jobs table without an index."""
    return [line for line in plan if line.startswith("SCAN jobs") and "INDEX" not in line]


# --- claim ----------------------------------------------------------------------------------------


CLAIM = "AND ready = 1 AND run_at <="  # the claim's read of the due jobs (then written by id)
TAKE = "SET state = 'processing'"
PROMOTE = "SET ready = 1"


def _sqlite_claim_plans(store: SqliteStore) -> Iterator[tuple[str, list[str]]]:
    yield "jobs_ready_queue", plan_of(store, lambda: store.claim("w2", ["q1"], NOW, LEASE), CLAIM)
    yield "jobs_ready_any", plan_of(store, lambda: store.claim("w2", None, NOW, LEASE), CLAIM)
    queue_service.set_paused(store, "q0", True)  # any queue but the paused ones: still the same index
    yield "jobs_ready_any", plan_of(store, lambda: store.claim("w2", None, NOW, LEASE), CLAIM)
    # before choosing, a claim promotes the jobs whose run_at has come: by time, not by a scan
    yield "jobs_not_due", plan_of(store, lambda: store.claim("w2", None, NOW, LEASE), PROMOTE)


def _postgres_claim_plans(store: PostgresStore) -> Iterator[tuple[str, list[str]]]:
    """The plans of the claim's statements, as PostgreSQL would run them on a big table (a table
    of 120 rows is read whole whatever its indexes: sequential scans are priced out here)."""
    seen: list[tuple[str, Any]] = []
    execute = store._conn.execute

    def watched(sql: str, params: Any = None) -> Any:
        seen.append((sql, params))
        return execute(sql, params)

    def plan(action: Callable[[], Any], marker: str) -> list[str]:
        seen.clear()
        store._conn.execute = watched  # type: ignore[method-assign]  # test-only: the real SQL
        try:
            action()
        finally:
            del store._conn.execute
        [(sql, params)] = [(sql, params) for sql, params in seen if marker in sql]
        with store.unit():
            store._conn.execute("ANALYZE jobs")  # as autovacuum would: without statistics the planner guesses
            store._conn.execute("SET LOCAL enable_seqscan = off")
            return store.query_plan(sql, params)

    yield "jobs_ready_queue", plan(lambda: store.claim("w2", ["q1"], NOW, LEASE), CLAIM)
    yield "jobs_ready_any", plan(lambda: store.claim("w2", None, NOW, LEASE), CLAIM)
    yield "jobs_not_due", plan(lambda: store.claim("w2", None, NOW, LEASE), PROMOTE)


def test_claim_is_served_by_the_ready_indexes(filled: Store, request: pytest.FixtureRequest) -> None:
    backend = backend_of(request)
    if backend == "mongomock":
        pytest.skip(MONGOMOCK_REASON)
    if backend == "mongodb":
        for queue in ("q1", None):
            plan = filled.explain_claim(queue, NOW)  # type: ignore[attr-defined]
            stages = _stages(plan["queryPlanner"]["winningPlan"])
            assert "IXSCAN" in stages, f"claim on {queue!r} does not use an index: {stages}"
            assert "COLLSCAN" not in stages, f"claim on {queue!r} scans the collection: {stages}"
        return
    if backend == "postgres":
        assert isinstance(filled, PostgresStore)
        for index, plan in _postgres_claim_plans(filled):
            assert any(index in line for line in plan), plan
            assert not any("Seq Scan on jobs" in line or "Sort" in line for line in plan), plan
        return
    assert isinstance(filled, SqliteStore)
    for index, plan in _sqlite_claim_plans(filled):
        # the inner SELECT walks the ready index in claim order: no full scan, no sort of all jobs
        assert any(f"USING INDEX {index}" in line for line in plan), plan
        assert full_scans(plan) == [], plan
        assert not any("TEMP B-TREE" in line for line in plan), f"claim sorts its candidates: {plan}"
    # the rows it chose are then written by primary key, one probe each
    take = plan_of(filled, lambda: filled.claim("w2", None, NOW, LEASE), TAKE)
    assert any("sqlite_autoindex_jobs_1 (id=?)" in line for line in take), take
    assert full_scans(take) == [], take


def _stages(plan: Any) -> list[str]:
    """Every ``stage`` name in an explain() plan tree (classic or slot-based engine)."""
    found: list[str] = []
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            found.append(plan["stage"])
        for value in plan.values():
            found.extend(_stages(value))
    elif isinstance(plan, list):
        for item in plan:
            found.extend(_stages(item))
    return found


# --- listings and the worker's periodic reads -----------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("list_jobs(state)", lambda s: s.list_jobs(state="pending")),
        ("list_jobs(queue)", lambda s: s.list_jobs(queue="q1")),
        ("list_jobs(state, queue)", lambda s: s.list_jobs(state="processing", queue="q2")),
        ("list_jobs()", lambda s: s.list_jobs()),
        ("expired", lambda s: s.expired(NOW + 1000)),
        ("next_due(None)", lambda s: s.next_due(None)),
        ("next_due(queues)", lambda s: s.next_due(["q0", "q2"])),
        ("recent_failures", lambda s: s.recent_failures()),
        ("throughput", lambda s: s.throughput(NOW - 3600)),
        ("count_purgeable(older)", lambda s: s.count_purgeable(["completed", "dead"], finished_before=NOW)),
    ],
)
def test_sqlite_reads_use_an_index(filled: Store, name: str, call: Callable[[Store], Any]) -> None:
    assert isinstance(filled, SqliteStore)
    statements = statements_of(filled, lambda: call(filled))
    assert statements, f"{name} ran no statement on jobs"
    for sql in statements:
        plan = filled.query_plan(sql)
        assert full_scans(plan) == [], f"{name} scans the whole jobs table: {plan}\n{sql}"
        assert any("INDEX" in line for line in plan), f"{name} uses no index: {plan}\n{sql}"


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize("call", [lambda s: s.counts(), lambda s: s.duration_totals()], ids=["counts", "durations"])
def test_sqlite_counters_are_read_without_touching_the_jobs(filled: Store, call: Callable[[Store], Any]) -> None:
    assert isinstance(filled, SqliteStore)
    seen: list[str] = []
    filled._conn.set_trace_callback(seen.append)  # test-only access: every statement, on any table
    try:
        call(filled)
    finally:
        filled._conn.set_trace_callback(None)
    assert seen and all(" jobs " not in f"{sql} " for sql in seen), seen
    for sql in seen:
        plan = filled.query_plan(sql)
        assert all(line.startswith("SCAN job_counts") for line in plan), plan  # a few rows per queue, never a job


def test_postgres_counters_are_read_from_the_delta_rows(filled: Store) -> None:
    if not isinstance(filled, PostgresStore):
        pytest.skip("PostgreSQL only")
    plan = filled.query_plan(filled.counters_sql)
    assert any("job_count_deltas" in line for line in plan) and not any(" jobs" in line for line in plan), plan


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("call", "index"),
    [
        (lambda s: s.throughput(NOW - 3600), "jobs_finished_at"),
        (lambda s: s.throughput(NOW - 3600), "jobs_failures"),
        (lambda s: s.recent_failures(), "jobs_failures"),
        (lambda s: s.count_purgeable(["completed"], finished_before=NOW), "jobs_finished_at"),
    ],
    ids=["throughput-completed", "throughput-failed", "recent_failures", "purge-older-than"],
)
def test_sqlite_finished_and_failed_reads_use_their_partial_indexes(
    filled: Store, call: Callable[[Store], Any], index: str
) -> None:
    """These two indexes leave out the jobs their readers never ask for (pending, processing), so
    that a claim moves neither; a reader whose WHERE stopped implying theirs would scan instead."""
    assert isinstance(filled, SqliteStore)
    plans = [filled.query_plan(sql) for sql in statements_of(filled, lambda: call(filled))]
    assert any(f"INDEX {index} " in line for plan in plans for line in plan), plans
