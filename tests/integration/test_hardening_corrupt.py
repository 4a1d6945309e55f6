"""A damaged queue file is fatal, not an outage (issue 11 #8): a ``--burst`` worker once waited
on it forever, retrying a claim that can never succeed. Now the worker and the CLI exit 7 with
one line naming the file, and a damaged row cannot crash the worker's idle wait."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from queuectl.core.errors import EXIT_CORRUPT, EXIT_UNAVAILABLE
from queuectl.runtime.worker import Worker, WorkerOptions
from queuectl.store.sql.sqlite import SqliteStore

PAGE = 4096


def env_for(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_DB"] = f"sqlite:///{db}"
    return env


def run(db: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env_for(db), capture_output=True, text=True, timeout=timeout, cwd=db.parent
    )


def queue_file(tmp_path: Path) -> Path:
    """A queue with jobs in it, checkpointed: everything lives in the main file, no WAL."""
    db = tmp_path / "q.db"
    store = SqliteStore(str(db))
    store.close()
    for n in range(20):
        assert run(db, "-m", "queuectl", "enqueue", f"echo {n} {'x' * 300}").returncode == 0
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
    conn.close()
    assert root > 1
    return db


def damage(db: Path, where: str) -> None:
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
    conn.close()
    with open(db, "r+b") as handle:
        if where == "header":
            handle.write(b"not a database at all " * 8)
        else:  # the jobs table's root page: the schema still reads, every claim fails
            handle.seek((root - 1) * PAGE)
            handle.write(b"\xff" * PAGE)


def one_error_line(stderr: str, db: Path) -> str:
    assert "Traceback" not in stderr, stderr
    naming = [line for line in stderr.splitlines() if str(db) in line]
    assert len(naming) == 1, stderr
    return naming[0]


@pytest.mark.parametrize("where", ["pages", "header"])
def test_a_burst_worker_on_a_damaged_file_exits_7_at_once_with_one_line(tmp_path: Path, where: str) -> None:
    db = queue_file(tmp_path)
    # Given the queue file is damaged
    damage(db, where)

    # When a burst worker starts on it
    started = time.monotonic()
    result = run(db, "-m", "queuectl.runtime.worker", "--burst", timeout=20)

    # Then it gives up within seconds with exit 7 and one line naming the file (no retry loop)
    assert result.returncode == EXIT_CORRUPT, result
    assert time.monotonic() - started < 10
    line = one_error_line(result.stderr, db)
    assert "damaged" in line
    assert "cannot claim" not in result.stderr


@pytest.mark.parametrize("where", ["pages", "header"])
def test_cli_commands_on_a_damaged_file_exit_5_with_one_line(tmp_path: Path, where: str) -> None:
    db = queue_file(tmp_path)
    damage(db, where)
    for args in (["list"], ["enqueue", "echo more"]):
        result = run(db, "-m", "queuectl", *args)
        assert result.returncode == EXIT_UNAVAILABLE, (args, result)  # like any database it cannot use
        assert result.stderr.count("\n") == 1, result.stderr
        one_error_line(result.stderr, db)


def test_a_damaged_run_at_does_not_crash_the_idle_wait(tmp_path: Path) -> None:
    """A row whose ``run_at`` reads back as text (a damaged page, a WAL removed under a live
    worker) once raised TypeError out of ``_go_idle``: the worker now just polls."""
    store = SqliteStore(str(tmp_path / "q.db"))
    worker = Worker(store, WorkerOptions())

    class OddStore:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def next_due(self, queues: list[str] | None) -> object:
            return "garbage"

    worker.store = OddStore()  # type: ignore[assignment]
    now = time.time()
    worker._go_idle(now)
    assert worker.want_claim is False
    assert worker.idle_until - time.monotonic() <= worker.config.poll_interval + 0.01
