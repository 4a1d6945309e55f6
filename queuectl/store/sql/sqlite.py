"""SQLite backend: one file, WAL, a claim is one ``BEGIN IMMEDIATE`` transaction.

Safe for many processes on one host. The file is private (0600 in a 0700 folder when we create
it) and a group- or world-writable file is refused: whoever can write the queue can run
commands as the worker's user.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any, Iterable, Iterator

from queuectl.core.errors import Conflict, NotFound
from queuectl.core.models import (
    CANCELLED,
    COMPLETED,
    FINISHED,
    HOOK_DONE,
    HOOK_FAILED,
    Job,
    Lease,
    Outcome,
    dependency_state,
)
from queuectl.store.base import Store, Waker
from queuectl.store.sql.errors import BUSY_TIMEOUT_S
from queuectl.store.sql.errors import translate_errors as _translate_errors
from queuectl.store.sql.files import exclusive_flock, open_private_file
from queuectl.store.sql.registry import SqliteRegistry
from queuectl.store.sql.schema import (
    CLAIMABLE_SQL,
    HOOK_DUE_SQL,
    INSERT_SQL,
    JOB_COLUMNS,
    job_row,
    migrate,
    needs_migration,
    row_job,
)
from queuectl.store.wake import SocketWaker, notify_all, wake_dir_for

_INSERT_BATCH = 1000


def _ready(outcome: Outcome) -> int:
    """1 if the job the outcome leaves behind can be claimed right away (a retry waits: 0)."""
    claimable = outcome.state in ("pending", "failed")
    return int(claimable and (outcome.run_at is None or outcome.run_at <= outcome.at))


class SqliteStore(SqliteRegistry, Store):
    """The default backend. ``path`` may be relative; ``synchronous`` is NORMAL unless asked."""

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = f"sqlite:///{self.path}"
        open_private_file(self.path)
        self._wake_dir = wake_dir_for(self.path)
        self._read_only = not os.access(self.path, os.W_OK)
        self._conn = self._connect(synchronous)

    @_translate_errors
    def _connect(self, synchronous: str) -> sqlite3.Connection:
        if self._read_only:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                isolation_level=None, check_same_thread=False,
            )
            return conn
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal" or needs_migration(conn):
            # First use (or an upgrade): processes starting together must not race to switch the
            # journal mode or create tables -- SQLite answers such a race with an instant "locked".
            with exclusive_flock(self.path):
                conn.execute("PRAGMA journal_mode=WAL")
                if needs_migration(conn):
                    with self._write(conn):
                        migrate(conn)
        return conn

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so no deadlocks."""
        conn = conn or self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- jobs: writing ----------------------------------------------------------------------

    @_translate_errors
    def enqueue_many(self, jobs: Iterable[Job]) -> int:
        count = 0
        batch: list[Job] = []
        with self._write() as conn:
            for job in jobs:
                if job.after or job.on_failure_of:
                    self._insert_batch(conn, batch)  # its parents may be in the batch
                    job.state = self._dependency_state(conn, job)
                    self._insert_batch(conn, [job])
                    conn.executemany(
                        "INSERT OR IGNORE INTO job_deps (child, parent, kind) VALUES (?, ?, ?)",
                        [(job.id, parent, "after") for parent in job.after]
                        + ([(job.id, job.on_failure_of, "on_failure")] if job.on_failure_of else []),
                    )
                else:
                    batch.append(job)
                    if len(batch) >= _INSERT_BATCH:
                        self._insert_batch(conn, batch)
                count += 1
            self._insert_batch(conn, batch)
        if count:
            self.notify()
        return count

    def _insert_batch(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        """Insert and empty ``batch`` with one executemany; on a conflict, name the job that caused it."""
        if not batch:
            return
        conn.execute("SAVEPOINT insert_batch")
        try:
            conn.executemany(INSERT_SQL, [job_row(job) for job in batch])
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO insert_batch")
            for job in batch:  # one by one, to find the culprit
                try:
                    conn.execute(INSERT_SQL, job_row(job))
                except sqlite3.IntegrityError as exc:
                    raise self._insert_conflict(conn, job, exc) from None
        finally:
            conn.execute("RELEASE insert_batch")
        batch.clear()

    @staticmethod
    def _dependency_state(conn: sqlite3.Connection, job: Job) -> str:
        def state_of(job_id: str) -> str | None:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return row[0] if row else None

        failure = (job.on_failure_of, state_of(job.on_failure_of)) if job.on_failure_of else None
        return dependency_state(job.id, {parent: state_of(parent) for parent in job.after}, failure)

    @staticmethod
    def _insert_conflict(conn: sqlite3.Connection, job: Job, exc: sqlite3.IntegrityError) -> Conflict:
        if "unique_key" in str(exc):
            holder = conn.execute(
                "SELECT id, state FROM jobs WHERE unique_key = ? AND state IN "
                "('pending', 'waiting', 'processing', 'failed')", (job.unique_key,)
            ).fetchone()
            held = f"job {holder[0]} ({holder[1]})" if holder else "another active job"
            return Conflict(f"unique key {job.unique_key!r} is taken by {held}; enqueue again once it has finished")
        return Conflict(f"a job with id {job.id!r} already exists")

    def _settle(self, conn: sqlite3.Connection, job_id: str, state: str, now: float) -> int:
        """A job just finished: release, or cancel (transitively), the jobs waiting on it.

        Returns how many jobs became pending. Runs inside the caller's transaction.
        """
        released = 0
        todo = [(job_id, state)]
        while todo:
            parent, parent_state = todo.pop()
            children = conn.execute(
                "SELECT d.child, d.kind FROM job_deps d JOIN jobs c ON c.id = d.child "
                "WHERE d.parent = ? AND c.state = 'waiting'", (parent,)
            ).fetchall()
            for child, kind in children:
                blocked_for_good = (kind == "after") != (parent_state == COMPLETED)
                if blocked_for_good:
                    reason = (f"not needed: {parent} completed" if kind == "on_failure"
                              else f"parent job {parent} ended {parent_state}")
                    conn.execute(
                        f"UPDATE jobs SET state = 'cancelled', last_error = ?, finished_at = ?, "
                        f"updated_at = ?, {HOOK_DUE_SQL} WHERE id = ? AND state = 'waiting'",
                        (reason, now, now, child),
                    )
                    todo.append((child, CANCELLED))
                elif not conn.execute(
                    "SELECT 1 FROM job_deps d JOIN jobs p ON p.id = d.parent WHERE d.child = ? AND "
                    "((d.kind = 'after' AND p.state != 'completed') OR "
                    "(d.kind = 'on_failure' AND p.state NOT IN ('dead', 'cancelled'))) LIMIT 1", (child,)
                ).fetchone():
                    released += conn.execute(
                        "UPDATE jobs SET state = 'pending', run_at = max(run_at, ?), updated_at = ?, ready = 0 "
                        "WHERE id = ? AND state = 'waiting'", (now, now, child),
                    ).rowcount
        return released

    @_translate_errors
    def claim(
        self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1
    ) -> list[Job]:
        with self._write() as conn:
            return self._claim_in(conn, worker_id, queues, now, lease, limit)

    @_translate_errors
    def finish_and_claim(
        self, outcomes: list[tuple[Lease, Outcome]], worker_id: str, queues: list[str] | None,
        now: float, lease: float, limit: int,
    ) -> tuple[list[bool], list[Job]]:
        released = 0
        with self._write() as conn:
            written = []
            for held, outcome in outcomes:
                ok, freed = self._finish_in(conn, held, outcome, None)
                written.append(ok)
                released += freed
            claimed = self._claim_in(conn, worker_id, queues, now, lease, limit) if limit > 0 else []
        if released:
            self.notify()
        return written, claimed

    def _claim_in(
        self, conn: sqlite3.Connection, worker_id: str, queues: list[str] | None, now: float, lease: float,
        limit: int,
    ) -> list[Job]:
        claimed: list[Job] = []
        conn.execute(  # the jobs whose time has come join the claim indexes
            f"UPDATE jobs SET ready = 1 WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_not_due "
            f"WHERE {CLAIMABLE_SQL} AND ready = 0 AND run_at <= ?)",
            (now,),
        )
        paused = [row[0] for row in conn.execute("SELECT name FROM queues WHERE paused = 1")]
        for queue in queues if queues else [None]:
            if queue in paused or len(claimed) >= limit:
                continue
            if queue is None:
                where, params = "", []
                if paused:
                    where = f" AND queue NOT IN ({', '.join('?' * len(paused))})"
                    params = list(paused)
                index = "jobs_ready_any"
            else:
                where, params, index = " AND queue = ?", [queue], "jobs_ready_queue"
            rows = conn.execute(
                f"UPDATE jobs SET state = 'processing', locked_by = ?, lease_expires_at = ?, "
                f"attempts = attempts + 1, started_at = ?, updated_at = ? "
                f"WHERE id IN (SELECT id FROM jobs INDEXED BY {index} "
                f"WHERE {CLAIMABLE_SQL} AND ready = 1 AND run_at <= ?{where} "
                f"ORDER BY priority DESC, created_at LIMIT ?) RETURNING {JOB_COLUMNS}",
                [worker_id, now + lease, now, now, now, *params, limit - len(claimed)],
            ).fetchall()
            # RETURNING gives no order: restore the claim order within this queue
            claimed.extend(sorted((row_job(row) for row in rows), key=lambda job: (-job.priority, job.created_at)))
        return claimed

    @_translate_errors
    def heartbeat(
        self, worker_id: str, beats: list[tuple[Lease, str | None]], now: float, lease: float
    ) -> set[str]:
        lost: set[str] = set()
        if not beats:
            return lost
        with self._write() as conn:
            for held, output in beats:
                cursor = conn.execute(
                    "UPDATE jobs SET lease_expires_at = ?, output = coalesce(?, output) "
                    "WHERE id = ? AND state = 'processing' AND locked_by = ? AND attempts = ?",
                    (now + lease, output, held.job_id, held.worker_id, held.attempt),
                )
                if cursor.rowcount == 0:
                    lost.add(held.job_id)
        return lost

    @_translate_errors
    def finish(self, lease: Lease, outcome: Outcome, expired_before: float | None = None) -> bool:
        with self._write() as conn:
            written, released = self._finish_in(conn, lease, outcome, expired_before)
        if released:
            self.notify()
        return written

    def _finish_in(
        self, conn: sqlite3.Connection, lease: Lease, outcome: Outcome, expired_before: float | None
    ) -> tuple[bool, int]:
        """The fenced outcome write; returns (written, how many waiting jobs it released)."""
        fence = " AND lease_expires_at <= ?" if expired_before is not None else ""
        params: list[Any] = [
            outcome.state, outcome.run_at, outcome.exit_code, outcome.last_error, outcome.output,
            outcome.at if outcome.state in FINISHED else None, outcome.duration, outcome.attempts,
            outcome.at, _ready(outcome), lease.job_id, lease.worker_id, lease.attempt,
        ]
        if expired_before is not None:
            params.append(expired_before)
        final = outcome.state in FINISHED
        cursor = conn.execute(
            "UPDATE jobs SET state = ?, run_at = coalesce(?, run_at), exit_code = ?, "
            "last_error = ?, output = coalesce(?, output), finished_at = ?, duration = ?, "
            "attempts = coalesce(?, attempts), updated_at = ?, ready = ?, locked_by = NULL, "
            f"lease_expires_at = NULL{', ' + HOOK_DUE_SQL if final else ''} "
            f"WHERE id = ? AND state = 'processing' AND locked_by = ? AND attempts = ?{fence}",
            params,
        )
        written = cursor.rowcount == 1
        released = self._settle(conn, lease.job_id, outcome.state, outcome.at) if written and final else 0
        return written, released

    @_translate_errors
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'processing' AND lease_expires_at < ? "
            "LIMIT ?",
            (now, limit),
        ).fetchall()
        return [row_job(row) for row in rows]

    @_translate_errors
    def cancel(self, job_id: str, now: float) -> Job:
        with self._write() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"no job with id {job_id!r}")
            if row[0] in FINISHED:
                raise Conflict(f"job {job_id} already finished ({row[0]}); nothing to cancel")
            updated = conn.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, updated_at = ?, locked_by = NULL, "
                f"lease_expires_at = NULL, {HOOK_DUE_SQL} WHERE id = ? RETURNING {JOB_COLUMNS}",
                (CANCELLED, now, now, job_id),
            ).fetchone()
            released = self._settle(conn, job_id, CANCELLED, now)
        if released:
            self.notify()
        return row_job(updated)

    @_translate_errors
    def retry_dead(self, job_id: str | None, now: float) -> int:
        reset = (
            "UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?, ready = 1, "
            "finished_at = NULL, locked_by = NULL, lease_expires_at = NULL WHERE state = 'dead'"
        )
        with self._write() as conn:
            try:
                if job_id is None:
                    count = conn.execute(reset, (now, now)).rowcount
                else:
                    count = conn.execute(reset + " AND id = ?", (now, now, job_id)).rowcount
            except sqlite3.IntegrityError:
                raise Conflict(
                    "a dead job's unique key is taken by an active job; retry it once that one has finished"
                ) from None
            if count == 0 and job_id is not None:
                row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no job with id {job_id!r}")
                raise Conflict(f"job {job_id} is {row[0]}, not in the dead letter queue")
        if count:
            self.notify()
        return count

    @_translate_errors
    def purge(self, states: list[str], finished_before: float | None = None, limit: int | None = None) -> int:
        where, params = self._purge_filter(states, finished_before)
        if limit is not None:
            where = f"id IN (SELECT id FROM jobs WHERE {where} LIMIT ?)"
            params.append(limit)
        with self._write() as conn:
            conn.execute(f"DELETE FROM job_deps WHERE child IN (SELECT id FROM jobs WHERE {where})", params)
            return conn.execute(f"DELETE FROM jobs WHERE {where}", params).rowcount

    @_translate_errors
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

    @_translate_errors
    def claim_hook(self, now: float) -> Job | None:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE jobs SET hook_state = 'running' WHERE id = (SELECT id FROM jobs "
                f"WHERE hook_state = 'due' ORDER BY updated_at LIMIT 1) RETURNING {JOB_COLUMNS}"
            ).fetchone()
        return row_job(row) if row else None

    @_translate_errors
    def finish_hook(self, job_id: str, error: str | None, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET hook_state = ?, hook_error = ? WHERE id = ?",
                (HOOK_FAILED if error else HOOK_DONE, error, job_id),
            )

    # --- jobs: reading ----------------------------------------------------------------------

    @_translate_errors
    def get(self, job_id: str) -> Job | None:
        row = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return row_job(row) if row else None

    @_translate_errors
    def list_jobs(
        self, state: str | None = None, queue: str | None = None, limit: int = 50
    ) -> list[Job]:
        clauses, params = [], []
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

    @_translate_errors
    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for state, queue, count in self._conn.execute(
            "SELECT state, queue, count(*) FROM jobs GROUP BY state, queue"
        ):
            result.setdefault(queue, {})[state] = count
        return result

    @_translate_errors
    def throughput(self, since: float, bucket: float = 60.0) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {"completed": {}, "failed": {}}
        queries = (
            ("completed", "SELECT CAST(finished_at / ? AS INTEGER), count(*) FROM jobs "
                          "WHERE state = 'completed' AND finished_at >= ? GROUP BY 1"),
            ("failed", "SELECT CAST(updated_at / ? AS INTEGER), count(*) FROM jobs "
                       "WHERE state IN ('failed', 'dead') AND updated_at >= ? GROUP BY 1"),
        )
        for name, sql in queries:
            for slot, count in self._conn.execute(sql, (bucket, since)):
                result[name][slot] = result[name].get(slot, 0) + count
        return result

    @_translate_errors
    def recent_failures(self, limit: int = 5) -> list[Job]:
        # one index walk per state, merged: a single IN (...) ORDER BY would sort every failure
        rows = self._conn.execute(
            f"SELECT * FROM (SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?) "
            f"UNION ALL SELECT * FROM (SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'dead' "
            "ORDER BY updated_at DESC LIMIT ?)",
            (limit, limit),
        ).fetchall()
        jobs = sorted((row_job(row) for row in rows), key=lambda job: job.updated_at, reverse=True)
        return jobs[:limit]

    @_translate_errors
    def duration_totals(self) -> tuple[int, float]:
        count, total = self._conn.execute(
            "SELECT count(duration), coalesce(sum(duration), 0) FROM jobs WHERE state = 'completed'"
        ).fetchone()
        return int(count), float(total)

    @_translate_errors
    def next_due(self, queues: list[str] | None) -> float | None:
        # ORDER BY ... LIMIT 1 on the partial indexes: one index probe, whatever the queue holds
        if not queues:
            row = self._conn.execute(
                f"SELECT run_at FROM jobs INDEXED BY jobs_due WHERE {CLAIMABLE_SQL} ORDER BY run_at LIMIT 1"
            ).fetchone()
            return row[0] if row else None
        due = []
        for queue in queues:
            row = self._conn.execute(
                f"SELECT run_at FROM jobs INDEXED BY jobs_due_queue WHERE {CLAIMABLE_SQL} AND queue = ? "
                "ORDER BY run_at LIMIT 1", (queue,)
            ).fetchone()
            if row:
                due.append(row[0])
        return min(due) if due else None

    # --- waking -----------------------------------------------------------------------------

    def waker(self, worker_id: str) -> Waker | None:
        return SocketWaker(self._wake_dir, worker_id)

    def notify(self, stop: bool = False) -> None:
        notify_all(self._wake_dir, b"s" if stop else b"!")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    # --- for tests and diagnostics ----------------------------------------------------------

    def query_plan(self, sql: str, params: Iterable[Any] = ()) -> list[str]:
        """``EXPLAIN QUERY PLAN`` lines for a statement (used to prove index use)."""
        return [row[3] for row in self._conn.execute(f"EXPLAIN QUERY PLAN {sql}", list(params))]
