"""Schema 9 (SQLite) adds ``workers.scale``: a schema-8 file keeps its workers and gains the column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from queuectl.core.models import WorkerInfo
from queuectl.service.workers import list_workers, register_worker
from queuectl.store import open_store


def test_a_schema_8_file_gets_the_scale_column_and_keeps_its_workers(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = open_store(f"sqlite:///{path}")
    register_worker(store, WorkerInfo("w1", "h", 1, "running", 1.0, 1.0))
    store.close()
    with sqlite3.connect(path) as conn:  # as schema 8 left it
        conn.execute("ALTER TABLE workers DROP COLUMN scale")
        conn.execute("PRAGMA user_version=8")
    store = open_store(f"sqlite:///{path}")
    try:
        assert [(w.id, w.scale) for w in list_workers(store)] == [("w1", "")]
        register_worker(store, WorkerInfo("w2", "h", 2, "running", 2.0, 2.0, scale="1..4"))
        assert {w.id: w.scale for w in list_workers(store)} == {"w1": "", "w2": "1..4"}
    finally:
        store.close()
