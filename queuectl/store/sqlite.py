"""SQLite backend: one file, WAL, a claim is one ``BEGIN IMMEDIATE`` transaction.

Safe for many processes on one host. The file is private (0600 in a 0700 folder when we create
it) and a group- or world-writable file is refused: whoever can write the queue can run
commands as the worker's user.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import stat
from typing import Any, Callable, Iterable, Iterator, TypeVar

from ..errors import Conflict, NotFound, StoreReadOnly, StoreUnavailable
from ..models import (
    CANCELLED,
    FINISHED,
    Job,
    Lease,
    Outcome,
    WorkerInfo,
)
from .base import Store, Waker
from .wake import SocketWaker, notify_all, wake_dir_for

BUSY_TIMEOUT_S = 30.0
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    timeout REAL,
    cwd TEXT,
    env TEXT,
    run_at REAL NOT NULL,
    locked_by TEXT,
    lease_expires_at REAL,
    exit_code INTEGER,
    last_error TEXT,
    output TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    duration REAL
);
-- claim order (one queue, any queue): partial indexes, so finished jobs never slow a claim
CREATE INDEX IF NOT EXISTS jobs_ready_queue ON jobs(queue, priority DESC, created_at)
    WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_ready_any ON jobs(priority DESC, created_at)
    WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_expires_at) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queue, created_at);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(queue, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs(state, updated_at);
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    queues TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    current_jobs TEXT NOT NULL DEFAULT '[]',
    stop_requested INTEGER NOT NULL DEFAULT 0
);
"""

_JOB_COLUMNS = (
    "id, command, state, queue, priority, attempts, max_retries, timeout, cwd, env, run_at, "
    "locked_by, lease_expires_at, exit_code, last_error, output, created_at, updated_at, "
    "started_at, finished_at, duration"
)
_CLAIMABLE_SQL = "state IN ('pending', 'failed')"

T = TypeVar("T")


def _translate_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn sqlite3's exceptions into queuectl's, so that a user sees one clear line."""

    @functools.wraps(method)
    def wrapper(self: SqliteStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise _classify(exc, self.path) from exc
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise StoreUnavailable(f"{self.path} is not a usable queue database ({exc})") from exc

    return wrapper


def _classify(exc: sqlite3.OperationalError, path: str) -> Exception:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreUnavailable(
            f"{path} stayed locked by another process for over {BUSY_TIMEOUT_S:g}s; try again"
        )
    if "readonly" in text or "read-only" in text:
        return StoreReadOnly(f"{path} is read-only: writes are refused (check its permissions)")
    if "full" in text:
        return StoreReadOnly(f"the disk holding {path} is full: free space and try again")
    if "unable to open" in text:
        return StoreUnavailable(f"cannot open {path}: check that its folder exists and is writable")
    return StoreUnavailable(f"{path}: {exc}")


def _open_private_file(path: str) -> None:
    """Create the database file 0600 (and its folder 0700) before SQLite opens it; refuse unsafe modes."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {folder} for the queue: {exc.strerror}") from None
    if not os.path.exists(path):
        with contextlib.suppress(FileExistsError):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except PermissionError:
                raise StoreReadOnly(f"cannot create {path}: permission denied") from None
    mode = os.stat(path).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreUnavailable(
            f"refusing {path}: it is writable by other users, who could run commands as you; "
            f"fix it with: chmod 600 {path}"
        )


class SqliteStore(Store):
    """The default backend. ``path`` may be relative; ``synchronous`` is NORMAL unless asked."""

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = f"sqlite:///{self.path}"
        _open_private_file(self.path)
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
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            with self._write(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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
        sql = f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * 21)})"
        with self._write() as conn:
            for job in jobs:
                try:
                    conn.execute(sql, _job_row(job))
                except sqlite3.IntegrityError:
                    raise Conflict(f"a job with id {job.id!r} already exists") from None
                count += 1
        if count:
            self.notify()
        return count

    @_translate_errors
    def claim(
        self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1
    ) -> list[Job]:
        claimed: list[Job] = []
        with self._write() as conn:
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
                    f"WHERE {_CLAIMABLE_SQL} AND run_at <= ?{where} "
                    f"ORDER BY priority DESC, created_at LIMIT ?) RETURNING {_JOB_COLUMNS}",
                    [worker_id, now + lease, now, now, now, *params, limit - len(claimed)],
                ).fetchall()
                claimed.extend(_row_job(row) for row in rows)
        claimed.sort(key=lambda job: (-job.priority, job.created_at))
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
        fence = " AND lease_expires_at <= ?" if expired_before is not None else ""
        params: list[Any] = [
            outcome.state, outcome.run_at, outcome.exit_code, outcome.last_error, outcome.output,
            outcome.at if outcome.state in FINISHED else None, outcome.duration, outcome.attempts,
            outcome.at, lease.job_id, lease.worker_id, lease.attempt,
        ]
        if expired_before is not None:
            params.append(expired_before)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state = ?, run_at = coalesce(?, run_at), exit_code = ?, "
                "last_error = ?, output = coalesce(?, output), finished_at = ?, duration = ?, "
                "attempts = coalesce(?, attempts), updated_at = ?, locked_by = NULL, "
                "lease_expires_at = NULL "
                f"WHERE id = ? AND state = 'processing' AND locked_by = ? AND attempts = ?{fence}",
                params,
            )
            return cursor.rowcount == 1

    @_translate_errors
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'processing' AND lease_expires_at < ? "
            "LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_row_job(row) for row in rows]

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
                f"lease_expires_at = NULL WHERE id = ? RETURNING {_JOB_COLUMNS}",
                (CANCELLED, now, now, job_id),
            ).fetchone()
        return _row_job(updated)

    @_translate_errors
    def retry_dead(self, job_id: str | None, now: float) -> int:
        reset = (
            "UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?, "
            "finished_at = NULL, locked_by = NULL, lease_expires_at = NULL WHERE state = 'dead'"
        )
        with self._write() as conn:
            if job_id is None:
                count = conn.execute(reset, (now, now)).rowcount
            else:
                count = conn.execute(reset + " AND id = ?", (now, now, job_id)).rowcount
                if count == 0:
                    row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
                    if row is None:
                        raise NotFound(f"no job with id {job_id!r}")
                    raise Conflict(f"job {job_id} is {row[0]}, not in the dead letter queue")
        if count:
            self.notify()
        return count

    @_translate_errors
    def purge(self, states: list[str], finished_before: float | None = None) -> int:
        where = f"state IN ({', '.join('?' * len(states))})"
        params: list[Any] = list(states)
        if finished_before is not None:
            where += " AND coalesce(finished_at, updated_at) < ?"
            params.append(finished_before)
        with self._write() as conn:
            return conn.execute(f"DELETE FROM jobs WHERE {where}", params).rowcount

    # --- jobs: reading ----------------------------------------------------------------------

    @_translate_errors
    def get(self, job_id: str) -> Job | None:
        row = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return _row_job(row) if row else None

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
            f"SELECT {_JOB_COLUMNS} FROM jobs {where}ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [_row_job(row) for row in rows]

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
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ('failed', 'dead') "
            "ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_row_job(row) for row in rows]

    @_translate_errors
    def duration_totals(self) -> tuple[int, float]:
        count, total = self._conn.execute(
            "SELECT count(duration), coalesce(sum(duration), 0) FROM jobs WHERE state = 'completed'"
        ).fetchone()
        return int(count), float(total)

    @_translate_errors
    def next_due(self, queues: list[str] | None) -> float | None:
        if not queues:
            row = self._conn.execute(
                f"SELECT min(run_at) FROM jobs WHERE {_CLAIMABLE_SQL}"
            ).fetchone()
            return row[0]
        due = [
            self._conn.execute(
                f"SELECT min(run_at) FROM jobs WHERE {_CLAIMABLE_SQL} AND queue = ?", (queue,)
            ).fetchone()[0]
            for queue in queues
        ]
        known = [value for value in due if value is not None]
        return min(known) if known else None

    # --- queues, config, workers ------------------------------------------------------------

    @_translate_errors
    def set_paused(self, queue: str, paused: bool) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO queues (name, paused) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET paused = excluded.paused",
                (queue, int(paused)),
            )
        if not paused:
            self.notify()

    @_translate_errors
    def paused_queues(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT name FROM queues WHERE paused = 1")}

    @_translate_errors
    def config_values(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM config").fetchall())

    @_translate_errors
    def set_config(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO config (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @_translate_errors
    def register_worker(self, info: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, state, started_at, last_heartbeat, "
                "queues, concurrency, current_jobs, stop_requested) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (info.id, info.host, info.pid, info.state, info.started_at, info.last_heartbeat,
                 info.queues, info.concurrency, json.dumps(info.current_jobs),
                 int(info.stop_requested)),
            )

    @_translate_errors
    def beat_worker(self, worker_id: str, now: float, state: str, current_jobs: list[str]) -> bool:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE workers SET last_heartbeat = ?, state = ?, current_jobs = ? WHERE id = ? "
                "RETURNING stop_requested",
                (now, state, json.dumps(current_jobs), worker_id),
            ).fetchone()
        return bool(row and row[0])

    @_translate_errors
    def list_workers(self) -> list[WorkerInfo]:
        rows = self._conn.execute(
            "SELECT id, host, pid, state, started_at, last_heartbeat, queues, concurrency, "
            "current_jobs, stop_requested FROM workers ORDER BY started_at DESC"
        ).fetchall()
        return [
            WorkerInfo(id=r[0], host=r[1], pid=r[2], state=r[3], started_at=r[4],
                       last_heartbeat=r[5], queues=r[6], concurrency=r[7],
                       current_jobs=json.loads(r[8]), stop_requested=bool(r[9]))
            for r in rows
        ]

    @_translate_errors
    def request_stop(self, worker_ids: list[str] | None = None) -> int:
        sql = "UPDATE workers SET stop_requested = 1 WHERE state != 'stopped'"
        params: list[str] = []
        if worker_ids:
            sql += f" AND id IN ({', '.join('?' * len(worker_ids))})"
            params = worker_ids
        with self._write() as conn:
            count = conn.execute(sql, params).rowcount
        self.notify(stop=True)
        return count

    @_translate_errors
    def prune_workers(self, seen_before: float) -> int:
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM workers WHERE state = 'stopped' OR last_heartbeat < ?", (seen_before,)
            ).rowcount

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


def _job_row(job: Job) -> tuple[Any, ...]:
    return (
        job.id, job.command, job.state, job.queue, job.priority, job.attempts, job.max_retries,
        job.timeout, job.cwd, json.dumps(job.env) if job.env else None, job.run_at, job.locked_by,
        job.lease_expires_at, job.exit_code, job.last_error, job.output, job.created_at,
        job.updated_at, job.started_at, job.finished_at, job.duration,
    )


def _row_job(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0], command=row[1], state=row[2], queue=row[3], priority=row[4], attempts=row[5],
        max_retries=row[6], timeout=row[7], cwd=row[8], env=json.loads(row[9]) if row[9] else {},
        run_at=row[10], locked_by=row[11], lease_expires_at=row[12], exit_code=row[13],
        last_error=row[14], output=row[15], created_at=row[16], updated_at=row[17],
        started_at=row[18], finished_at=row[19], duration=row[20],
    )
