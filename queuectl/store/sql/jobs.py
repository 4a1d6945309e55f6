"""The jobs table in SQL, written once for every SQL dialect (SQLite and PostgreSQL): inserts,
guarded updates and purges. Claims are :mod:`.claims`, reads :mod:`.job_reads`.

Mixins: the dialect class provides the connection, the transaction and the few spellings that
differ (:class:`~queuectl.store.sql.dialect.SqlDialect`). Statements are written with ``?``
placeholders (the PostgreSQL connection spells them ``%s``). No rule is decided here: the states
a statement names come from :mod:`queuectl.core.lifecycle`, spelled out where a partial index
needs them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Sequence

from queuectl.core.defaults import SQLITE_INSERT_BATCH as _INSERT_BATCH
from queuectl.core.errors import DuplicateJobId, UniqueKeyTaken
from queuectl.core.lifecycle import AFTER, KEY_HOLDING, ON_FAILURE, WhenHooked, is_due
from queuectl.core.models import PROCESSING, STAGED, STATES, Attempt, Event, Job, Lease
from queuectl.store.sql.claims import SqlClaims
from queuectl.store.sql.dialect import dialect_errors as _dialect_errors
from queuectl.store.sql.job_reads import SqlJobReads
from queuectl.store.sql.log import EVENT_INSERT as _EVENT_SQL
from queuectl.store.sql.log import SqlLog, enqueued_rows
from queuectl.store.sql.schema import FIELD_COLUMNS, INSERT_SQL, JSON_FIELDS, job_row, sql_list

_STORED_STATES = (*STATES, STAGED)


class SqlJobs(SqlClaims, SqlJobReads, SqlLog):
    """The job primitives of :class:`~queuectl.store.base.Store` as SQL statements."""

    _update_sql: dict[tuple[Any, ...], str]
    _unflushed: list[Job] | tuple[()] = ()  # the rows of an insert_jobs in progress, not yet sent
    # row locks that serialise dependencies where transactions run side by side (PostgreSQL; on
    # SQLite the one writer serialises everything): the parents an insert reads are share-locked,
    # so none finishes unseen by a child not yet committed (a settling parent's lock on the
    # children it found is SqlJobReads.child_lock)
    parent_lock = ""
    _inserting = False

    # --- jobs: writing ----------------------------------------------------------------------

    @_dialect_errors
    def insert_jobs(self, jobs: Iterable[Job]) -> int:
        count = 0
        batch: list[Job] = []
        labels: list[tuple[str, str]] = []
        self._unflushed = batch  # job_states, asked while the iterable runs, sees these too
        self._inserting = True
        try:
            with self._write() as conn, self._all_or_nothing(conn):
                for job in jobs:
                    batch.append(job)
                    if job.labels:
                        labels.extend((f"{key}={value}", job.id) for key, value in job.labels.items())
                    if job.after or job.on_failure_of:
                        self._insert_batch(conn, batch)
                        conn.executemany(
                            "INSERT INTO job_deps (child, parent, kind) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                            [(job.id, parent, AFTER) for parent in job.after]
                            + ([(job.id, job.on_failure_of, ON_FAILURE)] if job.on_failure_of else []),
                        )
                    elif len(batch) >= _INSERT_BATCH:
                        self._insert_batch(conn, batch)
                    count += 1
                self._insert_batch(conn, batch)
                if labels:
                    conn.executemany("INSERT INTO job_labels (label, job) VALUES (?, ?)", labels)
        finally:
            self._unflushed = ()  # a failed insert leaves nothing behind to be flushed later
            self._inserting = False
        return count

    @contextlib.contextmanager
    def _all_or_nothing(self, conn: Any) -> Iterator[None]:
        """A savepoint: inside a larger unit of work, a refused insert takes back all its rows
        (not just the refused batch), while the unit goes on."""
        conn.execute("SAVEPOINT insert_jobs")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO insert_jobs")
            raise
        finally:
            conn.execute("RELEASE insert_jobs")

    def _insert_batch(self, conn: Any, batch: list[Job]) -> None:
        """Insert and empty ``batch`` with one executemany; on a conflict, name the job that caused it."""
        if not batch:
            return
        conn.execute("SAVEPOINT insert_batch")
        try:
            conn.executemany(INSERT_SQL, [job_row(job) for job in batch])
        except self.integrity_error:
            conn.execute("ROLLBACK TO insert_batch")
            for job in batch:  # one by one, to find the culprit
                try:
                    conn.execute(INSERT_SQL, job_row(job))
                except self.integrity_error as exc:
                    conn.execute("ROLLBACK TO insert_batch")  # PostgreSQL: the transaction works again
                    raise self._insert_conflict(conn, job, exc) from None
        finally:
            conn.execute("RELEASE insert_batch")
        conn.executemany(_EVENT_SQL, enqueued_rows(batch))  # committed with the jobs, or not at all
        batch.clear()

    @staticmethod
    def _insert_conflict(conn: Any, job: Job, exc: Exception) -> Exception:
        if "unique_key" in str(exc):
            holder = conn.execute(
                f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN {sql_list(KEY_HOLDING)}",
                (job.unique_key,),
            ).fetchone()
            return UniqueKeyTaken(job.unique_key, (holder[0], holder[1]) if holder else None)
        return DuplicateJobId(job.id)

    @_dialect_errors
    def update_job(
        self,
        job_id: str,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...] | None = None,
        lease: Lease | None = None,
        expired_before: float | None = None,
        hook_state: str | None = None,
        attempt: Attempt | None = None,
        keep_outputs: int = 10,
        events: Sequence[Event] = (),
    ) -> bool:
        # a finish runs this for every job: no per-field Python loop on the way to the statement
        params = list(changes.values())
        hook_value = changes.get("hook_state")
        hooked = type(hook_value) is WhenHooked
        if hooked:
            params[list(changes).index("hook_state")] = hook_value.value  # type: ignore[union-attr]
        shape = (tuple(changes), hooked, states, lease is not None, expired_before is not None, hook_state is not None)
        sql = self._update_sql.get(shape)
        if sql is None:
            sql = self._update_sql[shape] = self._build_update(changes, states, shape)
        if "state" in changes:
            params.append(1 if is_due(changes) else 0)
        params.append(job_id)
        if lease is not None:
            params.append(lease.worker_id)
            params.append(lease.attempt)
        if expired_before is not None:
            params.append(expired_before)
        if hook_state is not None:
            params.append(hook_state)
        with self._write() as conn:
            try:
                if lease is None and "state" in changes:  # only such a change can take a unique key
                    with self.guarded(conn):
                        written = conn.execute(sql, params).rowcount == 1
                else:
                    written = conn.execute(sql, params).rowcount == 1
            except self.integrity_error:
                row = conn.execute("SELECT unique_key FROM jobs WHERE id = ?", (job_id,)).fetchone()
                raise UniqueKeyTaken(row[0] if row else None) from None
            if written and (attempt is not None or events):
                self._log_in(conn, job_id, attempt, keep_outputs, events)
            return written

    @_dialect_errors
    def update_jobs(
        self,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...],
        event: Event | None = None,
        batch: str | None = None,
        parentless: bool = False,
        limit: int | None = None,
    ) -> int:
        assert all(state in _STORED_STATES for state in states)
        assert not any(isinstance(v, WhenHooked) for v in changes.values())
        sets = [f"{FIELD_COLUMNS[name]} = ?" for name in changes]
        params = [_json(value) if name in JSON_FIELDS else value for name, value in changes.items()]
        if "state" in changes:
            sets.append("ready = ?")
            params.append(1 if is_due(changes) else 0)
        where = f"state IN {sql_list(states)}"
        filters: list[Any] = []
        if batch is not None:
            where += " AND batch = ?"
            filters.append(batch)
        if parentless:
            where += " AND after_ids IS NULL AND on_failure_of IS NULL"
        if limit is not None:  # by rowid where there is one: a batch is walked in the order it was written
            index = self.hint("jobs_batch") if batch is not None else ""
            where = f"{self.row_key} IN (SELECT {self.row_key} FROM jobs {index} WHERE {where} LIMIT ?)"
            filters.append(limit)
        params.extend(filters)
        with self._write() as conn:
            try:
                if event is not None:  # before the update: the rows it will write
                    self._log_events_for(conn, event, where, tuple(filters))
                if changes.get("state") == STAGED:
                    self._unlog_enqueued_for(conn, where, tuple(filters))
                return int(conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", params).rowcount)
            except self.integrity_error:
                raise UniqueKeyTaken(None) from None

    @staticmethod
    def _build_update(changes: dict[str, Any], states: tuple[str, ...] | None, shape: tuple[Any, ...]) -> str:
        sets = []
        for name, value in changes.items():
            assert name not in JSON_FIELDS, f"{name} is not updated in place"
            column = FIELD_COLUMNS[name]
            if isinstance(value, WhenHooked):
                sets.append(f"{column} = CASE WHEN on_finish IS NOT NULL THEN ? ELSE {column} END")
            else:
                sets.append(f"{column} = ?")
        if "state" in changes:
            sets.append("ready = ?")
        where = "id = ?"
        if states:
            assert all(state in _STORED_STATES for state in states), states
            where += f" AND state IN {sql_list(states)}"  # spelled out: see waiting_children
        if shape[3]:
            where += f" AND state = '{PROCESSING}' AND locked_by = ? AND attempts = ?"
        if shape[4]:
            where += " AND lease_expires_at <= ?"
        if shape[5]:
            where += " AND hook_state = ?"
        return f"UPDATE jobs SET {', '.join(sets)} WHERE {where}"

    @_dialect_errors
    def purge(
        self,
        states: list[str],
        finished_before: float | None = None,
        limit: int | None = None,
        batch: str | None = None,
        job_id: str | None = None,
    ) -> int:
        where, params = self._purge_filter(states, finished_before)
        if batch is not None:
            where += " AND batch = ?"
            params.append(batch)
        if job_id is not None:
            where += " AND id = ?"
            params.append(job_id)
        if limit is not None:
            where = f"id IN (SELECT id FROM jobs WHERE {where} LIMIT ?)"
            params.append(limit)
        with self._write() as conn:
            conn.execute(f"DELETE FROM job_deps WHERE child IN (SELECT id FROM jobs WHERE {where})", params)
            conn.execute(f"DELETE FROM attempts WHERE job_id IN (SELECT id FROM jobs WHERE {where})", params)
            conn.execute(f"DELETE FROM job_labels WHERE job IN (SELECT id FROM jobs WHERE {where})", params)
            return conn.execute(f"DELETE FROM jobs WHERE {where}", params).rowcount

    @_dialect_errors
    def count_purgeable(self, states: list[str], finished_before: float | None = None) -> int:
        where, params = self._purge_filter(states, finished_before)
        return self._conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0]

    @staticmethod
    def _purge_filter(states: list[str], finished_before: float | None) -> tuple[str, list[Any]]:
        where = f"state IN ({', '.join('?' * len(states))})"
        params: list[Any] = list(states)
        if finished_before is not None:
            where += " AND finished_at < ?"
            params.append(finished_before)
        return where, params

    @_dialect_errors
    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        if self._unflushed:  # an insert is in progress in this transaction: its rows first
            self._insert_batch(self._conn, self._unflushed)
        rows = self._conn.execute(
            f"SELECT id, state FROM jobs WHERE id IN ({', '.join('?' * len(job_ids))})"
            f"{self.parent_lock if self._inserting else ''}",
            job_ids,
        ).fetchall()
        return dict(rows)


def _json(value: Any) -> str | None:
    import json

    return json.dumps(value) if value else None
