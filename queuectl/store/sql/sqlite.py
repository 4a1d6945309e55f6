"""SQLite backend: one file, WAL; a unit of work is one ``BEGIN IMMEDIATE`` transaction.

Safe for many processes on one host. The file is private (0600 in a 0700 folder when we create
it) and a group- or world-writable file is refused: whoever can write the queue can run
commands as the worker's user.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Any, Iterable, NoReturn

from queuectl.store.base import Store, Waker
from queuectl.store.sql.errors import BUSY_TIMEOUT_S, is_full, sqlite_error
from queuectl.store.sql.errors import translate_errors as _translate_errors
from queuectl.store.sql.files import exclusive_flock, hold_file, open_private_file, release_file
from queuectl.store.sql.jobs import SqlJobs
from queuectl.store.sql.registry import SqlRegistry
from queuectl.store.sql.schema import (
    migrate,
    needs_migration,
)
from queuectl.store.wake import SocketWaker, notify_all, wake_dir_for

# Once the disk was full: checkpoint every this many WAL pages (not SQLite's 1000, 4 MB: on a small
# filesystem the WAL fills it before ever reaching that), and cut the WAL back to this size after.
_FULL_CHECKPOINT_PAGES = 64
_FULL_WAL_LIMIT = 1 << 20


class SqliteStore(SqlJobs, SqlRegistry, Store):
    """The default backend. ``path`` may be relative; ``synchronous`` is NORMAL unless asked."""

    transactional = True
    integrity_error = sqlite3.IntegrityError

    def classify_error(self, exc: Exception) -> Exception | None:
        return sqlite_error(self, exc)

    row_key = "rowid"
    claim_by_id = True  # one writer at a time: reading then writing the claimed rows is atomic

    def hint(self, index: str) -> str:
        # the planner picks a worse index for a claim on some data shapes: name the partial one
        return f"INDEXED BY {index}"

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = f"sqlite:///{self.path}"
        open_private_file(self.path)
        self._wake_dir = wake_dir_for(self.path)
        self._read_only = not os.access(self.path, os.W_OK)
        self._depth = 0  # 1 while this store's transaction is open
        self._closed = False
        self._joined: contextlib.nullcontext[Any] = contextlib.nullcontext()
        hold_file(self.path)
        try:
            self._conn = self._connect(synchronous)
        except BaseException:
            release_file(self.path)
            raise
        self._joined = contextlib.nullcontext(self._conn)
        self._update_sql: dict[tuple[Any, ...], str] = {}

    @_translate_errors
    def _connect(self, synchronous: str) -> sqlite3.Connection:
        if self._read_only:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
            return conn
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
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

    def _write(self, conn: sqlite3.Connection | None = None) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so no deadlocks.

        Re-entrant: inside a unit of work it joins that one (known from the store's own count,
        not guessed from the connection: a transaction left open by a failed COMMIT must never
        be joined). Joining costs nothing, as a finish does it for every statement.
        """
        if self._depth:
            return self._joined
        return _Transaction(self, conn or self._conn, translate=False)

    def unit(self) -> contextlib.AbstractContextManager[Any]:
        if self._depth:
            return self._joined
        return _Transaction(self, self._conn, translate=True)

    # --- waking -----------------------------------------------------------------------------

    def waker(self, worker_id: str) -> Waker | None:
        return SocketWaker(self._wake_dir, worker_id)

    def notify(self, stop: bool = False) -> None:
        notify_all(self._wake_dir, b"s" if stop else b"!")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        release_file(self.path)  # after the connection: see files.hold_file

    def _disk_full(self) -> None:
        """A write failed on a full disk: give the WAL's space back, so that it can recover.

        SQLite checkpoints only after a commit that left 1000 pages (4 MB) in the WAL; on a smaller
        free space the WAL fills the disk first and every later write fails, for good. So from now
        on this connection checkpoints early and truncates the WAL, and tries a checkpoint now
        (without waiting for other processes: this is best effort, the caller's error stands).
        """
        conn = self._conn
        with contextlib.suppress(sqlite3.Error):
            conn.execute(f"PRAGMA wal_autocheckpoint={_FULL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_FULL_WAL_LIMIT}")
            conn.execute("PRAGMA busy_timeout=0")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    # --- for tests and diagnostics ----------------------------------------------------------

    def query_plan(self, sql: str, params: Iterable[Any] = ()) -> list[str]:
        """``EXPLAIN QUERY PLAN`` lines for a statement (used to prove index use)."""
        return [row[3] for row in self._conn.execute(f"EXPLAIN QUERY PLAN {sql}", list(params))]


_SQLITE_BUSY = 5
_FIRST_TRY_AGAIN_S = 0.00005
_SHORT_WAIT_S = 0.1  # a wait this long is no turn-taking: the holder is busy (a migration, a purge)
_TRY_AGAIN_S = (0.001, 0.02)  # the longest pause, within a short wait and after it


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, asking again for the write lock in steps of 50 µs doubling to 1 ms.

    SQLite's own busy handler sleeps 1, 2, 5, 10 ms... between its tries: a worker whose turn
    comes 0.3 ms after it asked waits a whole millisecond or more, and two busy workers, taking
    turns on every job, drained 5-10 % slower for it. After a tenth of a second the
    pauses grow to 20 ms (a waiter costs no CPU to speak of behind a long purge). The wait is
    bounded by the same busy timeout; statements inside the transaction keep SQLite's handler
    (set back at once). Any other error is raised at once.
    """
    conn.execute("PRAGMA busy_timeout=0")
    try:
        started = time.monotonic()
        pause = _FIRST_TRY_AGAIN_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                waited = time.monotonic() - started
                if not _is_busy(exc) or waited >= BUSY_TIMEOUT_S:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, _TRY_AGAIN_S[waited >= _SHORT_WAIT_S])
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY (any extended code); Python 3.10 has no error codes, only the message."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF == _SQLITE_BUSY if isinstance(code, int) else "database is locked" in str(exc)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on an exception. A COMMIT that fails
    (a full disk) rolls back too, so the next write starts clean and the lock is freed.

    ``translate``: BEGIN and COMMIT fail as queuectl's errors (a unit of work, which no
    translating primitive wraps); inside a primitive its own wrapper translates them.
    """

    __slots__ = ("_store", "_conn", "_translate")

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection, translate: bool) -> None:
        self._store = store
        self._conn = conn
        self._translate = translate

    def __enter__(self) -> sqlite3.Connection:
        conn = self._conn
        if conn.in_transaction:  # left open by a failure we could not roll back: start clean
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        try:
            _begin_immediate(conn)
        except Exception as exc:
            self._raise(exc)
        self._store._depth = 1
        return conn

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        self._store._depth = 0
        if kind is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            if is_full(error) or is_full(getattr(error, "__cause__", None)):
                self._store._disk_full()
            return
        try:
            self._conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            if is_full(exc):
                self._store._disk_full()
            self._raise(exc)

    def _raise(self, exc: Exception) -> NoReturn:
        mapped = sqlite_error(self._store, exc) if self._translate else None
        if mapped is None:
            raise exc
        raise mapped from exc
