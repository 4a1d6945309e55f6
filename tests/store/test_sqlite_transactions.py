"""SQLite's unit of work after a failed COMMIT (a full disk while writing the WAL): the failure is
reported, the transaction is rolled back, and later writes commit for real (found in review: a
stale open transaction was joined by every later write, which reported success and never
committed, while holding the write lock)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreReadOnly
from queuectl.core.models import COMPLETED, Job, Lease, Outcome
from queuectl.store.sql.sqlite import SqliteStore


class CommitFailsOnce:
    """A connection whose next COMMIT fails as SQLite's does on a full disk."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.fail_commit = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.fail_commit:
            self.fail_commit = False
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)


def job(job_id: str) -> Job:
    return Job(id=job_id, command="true", created_at=1000.0, updated_at=1000.0, run_at=1000.0)


def test_a_failed_commit_is_rolled_back_and_later_writes_really_commit(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    lifecycle.enqueue(store, [job("a"), job("b")])
    store.claim("w", None, 2000.0, 30.0, 2)
    store._conn = CommitFailsOnce(store._conn)  # type: ignore[assignment]  # the fault, injected
    with pytest.raises(StoreReadOnly):
        lifecycle.finish(store, Lease("a", "w", 1), Outcome(COMPLETED, 2001.0, exit_code=0))
    assert lifecycle.finish(store, Lease("b", "w", 1), Outcome(COMPLETED, 2002.0, exit_code=0))
    other = sqlite3.connect(store.path, timeout=0.5)
    assert other.execute("SELECT id, state FROM jobs ORDER BY id").fetchall() == [
        ("a", "processing"),
        ("b", "completed"),
    ]  # a's outcome stays with its worker, to retry
    other.execute("BEGIN IMMEDIATE")  # and the write lock is free
    other.execute("ROLLBACK")


def test_an_insert_refused_inside_a_unit_leaves_none_of_its_jobs(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    lifecycle.enqueue(store, [job("dup")])
    with store.unit():
        with pytest.raises(Exception, match="already exists"):
            store.insert_jobs([job("x"), job("y"), job("dup")])
        store.insert_job(job("z"))
    assert sorted(j.id for j in store.list_jobs()) == ["dup", "z"]
