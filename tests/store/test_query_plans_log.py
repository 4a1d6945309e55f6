"""The history and the event log stay flat at a million jobs: every statement they run on the
busy path or for a reader is served by an index (SQLite's query plans, as in test_query_plans)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from queuectl.core import lifecycle
from queuectl.core.models import Job, Lease
from queuectl.store.sql.log import ATTEMPT_FIELDS, EVENT_INSERT
from queuectl.store.sql.sqlite import SqliteStore

T = 1000.0


def unindexed(plan: list[str]) -> list[str]:
    """Plan lines that read a whole table (a SCAN without an index)."""
    return [line for line in plan if line.startswith("SCAN") and "INDEX" not in line and "PRIMARY KEY" not in line]


def test_every_history_and_event_statement_uses_an_index(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    lifecycle.enqueue(
        store, [Job(id=f"j{n}", command="true", created_at=T + n, run_at=T, updated_at=T) for n in range(50)]
    )
    for job in lifecycle.claim(store, "w1", None, T + 60, 30, 20):
        lifecycle.finish(store, Lease(job.id, "w1", job.attempts), lifecycle.success_outcome(T + 61, "x", 0.1))
    store._conn.execute("ANALYZE")  # test-only access: plans as on a file that has seen some use

    fields = ", ".join("?" * len(ATTEMPT_FIELDS))
    statements: dict[str, tuple[str, list[Any]]] = {
        # the busy path: the attempt's number, and an event's queue, are looked up by primary key
        "attempt insert": (
            f"INSERT INTO attempts (job_id, n, {', '.join(ATTEMPT_FIELDS)}) VALUES "
            f"(?, (SELECT coalesce(max(n), 0) + 1 FROM attempts WHERE job_id = ?), {fields})",
            ["j1", "j1", *([None] * len(ATTEMPT_FIELDS))],
        ),
        "event insert": (EVENT_INSERT, [T, "x", "j1", None, "j1", None, None]),
        "output trim": (
            "UPDATE attempts SET output = NULL WHERE job_id = ? AND n <= ? AND output IS NOT NULL",
            ["j1", 1],
        ),
        # readers
        "a job's history": ("SELECT * FROM attempts WHERE job_id = ? ORDER BY n", ["j1"]),
        "the log after a seq": ("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", [10, 100]),
        "a job's events": ("SELECT * FROM events WHERE seq > ? AND job_id = ? ORDER BY seq LIMIT ?", [0, "j1", 100]),
        "the newest": ("SELECT * FROM events WHERE seq > ? ORDER BY seq DESC LIMIT ?", [0, 1]),
        "retention": (
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?) AND at < ?",
            [1000, T],
        ),
        "a bulk enqueue turning staged": (  # its first transaction takes back its jobs' enqueued events
            "DELETE FROM events INDEXED BY events_job WHERE kind = 'enqueued' AND job_id IS NOT NULL AND job_id IN "
            "(SELECT id FROM jobs WHERE state IN ('pending', 'waiting') AND batch = ?)",
            ["file1"],
        ),
        "purge with its job": ("DELETE FROM attempts WHERE job_id IN (SELECT id FROM jobs WHERE id = ?)", ["j1"]),
    }
    plans = {name: store.query_plan(sql, params) for name, (sql, params) in statements.items()}
    # retention walks from the oldest seq (rowid order, no sort) and stops at its LIMIT: bounded
    assert not any("TEMP B-TREE" in line for line in plans.pop("retention"))
    assert {name: unindexed(plan) for name, plan in plans.items() if unindexed(plan)} == {}
    assert any("events_job" in line for line in plans["a job's events"])
    assert any("events_job" in line for line in plans["a bulk enqueue turning staged"])
    assert any("PRIMARY KEY" in line for line in plans["a job's history"])
    store.close()


def test_a_file_of_schema_6_gains_the_history_the_log_and_progress(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "old.db")
    SqliteStore(path).close()
    conn = sqlite3.connect(path)  # back to what schema 6 had: no progress columns, no new tables
    for column in ("progress_done", "progress_total", "progress_message", "progress_at"):
        conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    conn.execute("DROP TABLE attempts")
    conn.execute("DROP TABLE events")
    conn.execute("PRAGMA user_version=6")
    conn.commit()
    conn.close()

    store = SqliteStore(path)
    lifecycle.enqueue(store, [Job(id="a", command="true", created_at=T, run_at=T, updated_at=T)])
    (job,) = lifecycle.claim(store, "w1", None, T + 1, 30, 1)
    lease = Lease("a", "w1", job.attempts)
    lifecycle.heartbeat(store, "w1", [(lease, None)], T + 2, 30, {"a": (1.0, 2.0, None)})
    assert lifecycle.finish(store, lease, lifecycle.success_outcome(T + 3, "x", 0.1))
    assert [row.ended for row in store.attempts("a")] == ["completed"]
    assert [e.kind for e in store.read_events()] == ["enqueued", "claimed", "progress", "completed"]
    saved = store.get("a")
    assert saved is not None and saved.progress_done == 1.0 and isinstance(saved.progress_done, float)
    store.close()
