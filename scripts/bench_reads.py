"""The read-side figures of ``scripts/bench.py`` (scenario ``reads``, issue 18 #1): what a
``status``, one dashboard refresh and one ``/metrics`` scrape cost on a big store against the
same on a store of 1,000 jobs (target: <= 1.2 x), plus ``list --state S --limit 50`` and ``show``.

Each figure is the service function the front ends call (``observe.status``,
``dashboard.collect``, ``observe.metrics_reading``, ``jobs.list_jobs``, ``jobs.get_job``), run in
this process on an open store: process start and rendering cost the same at any size, and would
only hide the part that grows. Calls on the two stores alternate, so noise hits both alike.

Building 1M (or 10M, ``--reads-jobs``) jobs through queuectl takes minutes, so the big store is
filled with one ``INSERT ... SELECT`` from a recursive CTE into the real schema, with the
counters' triggers off; the counters are then built by the migration's own recount
(:func:`queuectl.store.sql.counters.recount`) and the triggers put back. A figure "GROUP BY
over every job" shows what ``counts()`` cost before the counters, on the same store.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import time
from typing import Any, Callable

SMALL_JOBS = 1000
QUEUES = 4
CALLS = 50  # calls per sample: one call is well under a millisecond
TRIGGERS = ("jobs_count_insert", "jobs_count_update", "jobs_count_delete")


_INSERT = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)
INSERT INTO jobs (id, command, state, queue, priority, attempts, max_retries, run_at, created_at,
    updated_at, started_at, finished_at, duration, exit_code, last_error, output, ready)
SELECT printf(? || '%010d', i), 'echo ' || i, s, 'q' || (i % ?), 0, 1, 3, t, t, t + 1, t + 0.5,
    CASE WHEN s IN ('completed', 'dead') THEN t + 1 END, CASE WHEN s = 'completed' THEN 0.5 END,
    CASE WHEN s = 'completed' THEN 0 ELSE 1 END, CASE WHEN s = 'completed' THEN NULL ELSE 'exit 1' END,
    i || char(10), CASE WHEN s = 'pending' THEN 1 ELSE 0 END
FROM (SELECT i, ? + i * ? AS t, CASE i % 100 WHEN 0 THEN 'dead' WHEN 1 THEN 'dead' WHEN 2 THEN 'failed'
    WHEN 3 THEN 'pending' ELSE 'completed' END AS s FROM n)
"""


def fill(path: str, jobs: int, now: float) -> None:
    """A fresh SQLite store at ``path``: the same :data:`SMALL_JOBS` recent jobs (the last hour)
    in every store, and ``jobs - SMALL_JOBS`` older ones (2 to 32 days ago): a big store is a
    small one with a long history. 96% completed (with durations), 2% dead, 1% failed, 1%
    pending, over :data:`QUEUES` queues."""
    from queuectl.store.sql.counters import SQLITE_COUNTERS, recount
    from queuectl.store.sql.sqlite import SqliteStore

    SqliteStore(path).close()  # the real schema, counters included
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for trigger in TRIGGERS:
            conn.execute(f"DROP TRIGGER {trigger}")
        old = jobs - SMALL_JOBS
        if old > 0:
            conn.execute(_INSERT, (old, "o", QUEUES, now - 32 * 86400, 30 * 86400 / old))
        conn.execute(_INSERT, (SMALL_JOBS, "j", QUEUES, now - 3600, 3600 / SMALL_JOBS))
        for statement in (*recount("job_counts"), *SQLITE_COUNTERS):
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def group_by_ms(path: str) -> float:
    """What ``counts()`` did before the counters: a GROUP BY over every job."""
    conn = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        conn.execute("SELECT state, queue, count(*) FROM jobs GROUP BY state, queue").fetchall()
        return (time.perf_counter() - started) * 1000
    finally:
        conn.close()


def calls() -> dict[str, Callable[[Any], Any]]:
    from queuectl.service import dashboard, observe
    from queuectl.service import jobs as job_service

    now = time.time()
    return {
        "status": lambda store: observe.status(store, now),
        "dashboard": lambda store: dashboard.collect(store, now),
        "metrics": lambda store: observe.metrics_reading(store, now),
        "list": lambda store: job_service.list_jobs(store, "completed", limit=50),
        "show": lambda store: job_service.get_job(store, "j0000000500"),
    }


def paired_ms(small: Any, big: Any, call: Callable[[Any], Any]) -> tuple[float, float]:
    """Mean ms of ``call`` on each store, the calls alternating one by one (a busy moment of the
    shared machine then slows both alike)."""
    spent = [0.0, 0.0]
    for n in range(CALLS):
        for side in (0, 1) if n % 2 else (1, 0):  # neither always first
            store = (small, big)[side]
            started = time.perf_counter()
            call(store)
            spent[side] += time.perf_counter() - started
    return spent[0] / CALLS * 1000, spent[1] / CALLS * 1000


def scenario(bench: Any, backend: str, run: int, target: Any) -> None:
    """The ``reads`` scenario of bench.py (``target`` makes its Target rows)."""
    from queuectl.store import open_store

    res = bench.results
    n = bench.args.reads_jobs or (20_000 if bench.args.quick else 1_000_000)
    reps = 3 if bench.args.quick else 10
    names = {
        "status": "status (observe.status)",
        "dashboard": "one dashboard refresh (dashboard.collect)",
        "metrics": "one /metrics scrape (observe.metrics_reading)",
        "list": "list --state completed --limit 50",
        "show": "show JOB (get_job)",
    }
    figures = {}
    for name, label in names.items():
        small = res.define(f"sqlite.reads.small.{name}", f"{label}, {SMALL_JOBS} jobs", "ms")
        figures[name] = (
            small,
            res.define(f"sqlite.reads.{name}", f"{label}, {n:,} jobs", "ms", small, target("ratio", 1.2, "<= 1.2 x")),
        )
    before = res.define("sqlite.reads.group_by", f"counts() as a GROUP BY over {n:,} jobs (before the counters)", "ms")
    stores = getattr(bench, "reads_stores", None)
    if stores is None or stores[2] != n:
        folder = os.path.join(bench.root, "reads")
        os.makedirs(folder, exist_ok=True)
        paths = (os.path.join(folder, "small.db"), os.path.join(folder, "big.db"))
        print(f"building the read-side stores: {SMALL_JOBS} and {n:,} jobs ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        now = time.time()
        fill(paths[0], SMALL_JOBS, now)
        fill(paths[1], n, now)
        size = os.path.getsize(paths[1]) / 2**20
        print(f"  built in {time.perf_counter() - started:.1f}s ({size:.0f} MB)", file=sys.stderr, flush=True)
        stores = bench.reads_stores = (*paths, n)
    small_store, big_store = (open_store(f"sqlite:///{path}") for path in stores[:2])
    try:
        todo = calls()
        for call in todo.values():  # warm both page caches and every statement cache
            call(small_store), call(big_store)
        for _ in range(reps):
            for name, call in todo.items():
                small_ms, big_ms = paired_ms(small_store, big_store, call)
                res.add(figures[name][0], run, small_ms)
                res.add(figures[name][1], run, big_ms)
        res.add(before, run, statistics.median(group_by_ms(stores[1]) for _ in range(3)))
    finally:
        small_store.close()
        big_store.close()
