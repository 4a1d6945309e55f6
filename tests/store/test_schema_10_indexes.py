"""Schema 10 (SQLite): the finished and failures indexes hold only the jobs their readers ask for.

A schema-9 file loses the two full indexes every claim had to move and gains the partial ones,
keeping its jobs and counters.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from queuectl.core import lifecycle
from queuectl.service.jobs import enqueue
from queuectl.store import open_store
from queuectl.store.sql.schema import SCHEMA_VERSION


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_schema_9_file_gets_the_partial_indexes_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = open_store(f"sqlite:///{path}")
    enqueue(store, [{"command": "true"}, {"command": "true"}])
    store.close()
    with sqlite3.connect(path) as conn:  # as schema 9 left it
        conn.execute("DROP INDEX jobs_finished_at")
        conn.execute("DROP INDEX jobs_failures")
        conn.execute("CREATE INDEX jobs_finished ON jobs(state, finished_at)")
        conn.execute("CREATE INDEX jobs_updated ON jobs(state, updated_at)")
        conn.execute("PRAGMA user_version=9")
    store = open_store(f"sqlite:///{path}")
    try:
        assert store.counts() == {"default": {"pending": 2}}
        assert lifecycle.claim(store, "w1", None, store.now(), 60, 1)
        assert store.counts() == {"default": {"pending": 1, "processing": 1}}
    finally:
        store.close()
    names = _indexes(path)
    assert {"jobs_finished_at", "jobs_failures"} <= names
    assert not {"jobs_finished", "jobs_updated"} & names
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
