"""Reading jobs in SQL, written once for every dialect: one job, a page of a listing, the
children waiting on a parent, and the figures ``status``, the dashboard and ``/metrics`` read.

Every read here is an index walk or a read of the counters' few rows, never a scan of the jobs
(``tests/store/test_query_plans.py`` holds each to its index).
"""

from __future__ import annotations

from typing import Any

from queuectl.core.lifecycle import HOOK_DUE
from queuectl.core.models import COMPLETED, DEAD, FAILED, PROCESSING, STAGED, WAITING, Job
from queuectl.store.sql.counters import SQLITE_READ
from queuectl.store.sql.dialect import SqlDialect
from queuectl.store.sql.dialect import dialect_errors as _dialect_errors
from queuectl.store.sql.schema import CLAIMABLE_SQL, FAILURES_SQL, FIELD_COLUMNS, JOB_COLUMNS, row_job

_CHILD_COLUMNS = ", ".join("c." + column for column in FIELD_COLUMNS.values())


class SqlJobReads(SqlDialect):
    """The job reads of :class:`~queuectl.store.base.Store` as SQL statements."""

    # PostgreSQL: a settling parent locks the children it found, so two parents finishing together
    # settle a shared child one after the other (SQLite's one writer serialises them anyway)
    child_lock = ""

    @_dialect_errors
    def get(self, job_id: str, staged: bool = False) -> Job | None:
        row = self._conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row_job(row) if row and (staged or row[2] != STAGED) else None

    @_dialect_errors
    def list_jobs(
        self,
        state: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before: float | None = None,
        batch: str | None = None,
        labels: list[str] | None = None,
    ) -> list[Job]:
        clauses: list[str] = [] if state else [f"state != '{STAGED}'"]
        params: list[Any] = []
        for label in labels or ():  # by the label rows' primary key, never a scan of the jobs
            clauses.append("id IN (SELECT job FROM job_labels WHERE label = ?)")
            params.append(label)
        if batch is not None:
            clauses.append("batch = ?")
            params.append(batch)
        if before is not None:
            clauses.append("created_at < ?")
            params.append(before)
        if state:
            clauses.append("state = ?")
            params.append(state)
        if queue:
            clauses.append("queue = ?")
            params.append(queue)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs {where}ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [row_job(row) for row in rows]

    @_dialect_errors
    def waiting_children(self, parent_id: str, any_state: bool = False, limit: int | None = None) -> list[Job]:
        if any_state:
            sql = (
                f"SELECT {_CHILD_COLUMNS} FROM job_deps d JOIN jobs c ON c.id = d.child "
                f"WHERE d.parent = ? AND c.state != '{STAGED}' ORDER BY c.created_at, c.id"
            )
            if limit is None:
                rows = self._conn.execute(sql, (parent_id,)).fetchall()
            else:  # twice the rows: a child may name the parent twice (after and on failure)
                rows = self._conn.execute(sql + " LIMIT ?", (parent_id, 2 * limit)).fetchall()
            unique = list({row[0]: row for row in rows}.values())
            return [row_job(row) for row in unique[:limit]]
        # the state spelled out, not bound: a bound state makes SQLite re-plan the statement each
        # time (partial indexes on state), which cost a finish ~50 us for a query that is empty
        rows = self._conn.execute(
            f"SELECT {_CHILD_COLUMNS} FROM job_deps d JOIN jobs c ON c.id = d.child "
            f"WHERE d.parent = ? AND c.state = '{WAITING}'{self.child_lock}",
            (parent_id,),
        ).fetchall()
        children = {row[0]: row for row in rows}  # a child naming the parent twice (after and on failure)
        return [row_job(row) for row in children.values()]

    @_dialect_errors
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = '{PROCESSING}' AND lease_expires_at < ? LIMIT ?",
            (now, limit),
        ).fetchall()
        return [row_job(row) for row in rows]

    @_dialect_errors
    def hooks_due(self, limit: int = 1) -> list[Job]:
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE hook_state = '{HOOK_DUE}' ORDER BY updated_at LIMIT ?", (limit,)
        ).fetchall()
        return [row_job(row) for row in rows]

    # the counters kept by triggers (see :mod:`queuectl.store.sql.counters`): a read of a few
    # rows per queue, whatever the number of jobs
    counters_sql = SQLITE_READ

    @_dialect_errors
    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for queue, state, count, _, _ in self._conn.execute(self.counters_sql):
            if count:
                result.setdefault(queue, {})[state] = int(count)
        return result

    @_dialect_errors
    def throughput(self, since: float, bucket: float = 60.0) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {"completed": {}, "failed": {}}
        queries = (
            (
                "completed",
                f"SELECT {self.bucket('finished_at')}, count(*) FROM jobs "
                f"WHERE state = '{COMPLETED}' AND finished_at >= ? GROUP BY 1",
            ),
            (
                "failed",
                f"SELECT {self.bucket('updated_at')}, count(*) FROM jobs "
                f"WHERE {FAILURES_SQL} AND updated_at >= ? GROUP BY 1",
            ),
        )
        for name, sql in queries:
            for slot, count in self._conn.execute(sql, (bucket, since)):
                result[name][slot] = result[name].get(slot, 0) + count
        return result

    @_dialect_errors
    def recent_failures(self, limit: int = 5) -> list[Job]:
        # one index walk per state, merged: a single IN (...) ORDER BY would sort every failure
        rows = self._conn.execute(
            f"SELECT * FROM (SELECT {JOB_COLUMNS} FROM jobs WHERE state = '{FAILED}' "
            "ORDER BY updated_at DESC LIMIT ?) f "
            f"UNION ALL SELECT * FROM (SELECT {JOB_COLUMNS} FROM jobs WHERE state = '{DEAD}' "
            "ORDER BY updated_at DESC LIMIT ?) d",
            (limit, limit),
        ).fetchall()
        jobs = sorted((row_job(row) for row in rows), key=lambda job: job.updated_at, reverse=True)
        return jobs[:limit]

    @_dialect_errors
    def duration_totals(self) -> tuple[int, float]:
        count, total = 0, 0.0
        for _, state, _, timed, seconds in self._conn.execute(self.counters_sql):
            if state == COMPLETED and timed:
                count, total = count + int(timed), total + float(seconds)
        return count, total

    @_dialect_errors
    def next_due(self, queues: list[str] | None) -> float | None:
        # ORDER BY ... LIMIT 1 on the partial indexes: one index probe, whatever the queue holds
        if not queues:
            row = self._conn.execute(
                f"SELECT run_at FROM jobs {self.hint('jobs_due')} WHERE {CLAIMABLE_SQL} ORDER BY run_at LIMIT 1"
            ).fetchone()
            return row[0] if row else None
        due = []
        for queue in queues:
            row = self._conn.execute(
                f"SELECT run_at FROM jobs {self.hint('jobs_due_queue')} WHERE {CLAIMABLE_SQL} AND queue = ? "
                "ORDER BY run_at LIMIT 1",
                (queue,),
            ).fetchone()
            if row:
                due.append(row[0])
        return min(due) if due else None
