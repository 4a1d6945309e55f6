"""SQLite backend: one file, WAL; a unit of work is one ``BEGIN IMMEDIATE`` transaction.

Safe for many processes on one host. The file is private (0600 in a 0700 folder when we create
it) and a group- or world-writable file is refused: whoever can write the queue can run
commands as the worker's user.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any, Iterable, Iterator

from queuectl.store.base import Store, Waker
from queuectl.store.sql.errors import BUSY_TIMEOUT_S, sqlite_error
from queuectl.store.sql.errors import translate_errors as _translate_errors
from queuectl.store.sql.files import exclusive_flock, open_private_file
from queuectl.store.sql.jobs import SqlJobs
from queuectl.store.sql.registry import SqliteRegistry
from queuectl.store.sql.schema import (
    migrate,
    needs_migration,
)
from queuectl.store.wake import SocketWaker, notify_all, wake_dir_for


class SqliteStore(SqlJobs, SqliteRegistry, Store):
    """The default backend. ``path`` may be relative; ``synchronous`` is NORMAL unless asked."""

    transactional = True
    integrity_error = sqlite3.IntegrityError

    def classify_error(self, exc: Exception) -> Exception | None:
        return sqlite_error(self, exc)

    def hint(self, index: str) -> str:
        # the planner picks a worse index for a claim on some data shapes: name the partial one
        return f"INDEXED BY {index}"

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = f"sqlite:///{self.path}"
        open_private_file(self.path)
        self._wake_dir = wake_dir_for(self.path)
        self._read_only = not os.access(self.path, os.W_OK)
        self._depth = 0  # nesting of _write: 0 outside a transaction
        self._conn = self._connect(synchronous)
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

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so no deadlocks.

        Re-entrant: inside a unit of work it joins that one (counted, not guessed from the
        connection: a transaction left open by a failed COMMIT must never be joined). A COMMIT
        that fails (a full disk) rolls back, so the next write starts clean and the lock is freed.
        """
        conn = conn or self._conn
        if self._depth:
            self._depth += 1
            try:
                yield conn
            finally:
                self._depth -= 1
            return
        if conn.in_transaction:  # left open by a failure we could not roll back: start clean
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield conn
        except BaseException:
            self._depth = 0
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def unit(self) -> contextlib.AbstractContextManager[None]:
        return _Unit(self)

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


class _Unit:
    """The context manager behind :meth:`SqliteStore.unit`: one transaction, or a part of the open
    one. Its BEGIN and COMMIT fail like any other statement: as queuectl's errors."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._cm = store._write()

    def __enter__(self) -> None:
        try:
            self._cm.__enter__()
        except Exception as exc:
            raise self._translated(exc) from exc

    def __exit__(self, *exc: Any) -> bool | None:
        try:
            return self._cm.__exit__(*exc)
        except Exception as error:
            if error is exc[1]:
                raise
            raise self._translated(error) from error

    def _translated(self, exc: Exception) -> Exception:
        return sqlite_error(self._store, exc) or exc
