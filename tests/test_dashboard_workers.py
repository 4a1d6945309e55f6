"""The dashboard's worker panel on an 80×24 terminal: dead workers are counted, not listed.

A worker row stays in the registry for an hour after its worker died; listed one per line, a
handful of them pushed the queue panel off the screen (issue 14).
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from queuectl.cli.dashboard_view import render
from queuectl.core.models import WorkerInfo
from queuectl.service import workers as registry
from queuectl.service.dashboard import collect
from queuectl.store.sql.sqlite import SqliteStore

NOW = 1_800_000_000.0


def test_dead_and_long_silent_workers_collapse_to_a_count(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    try:
        registry.register_worker(store, WorkerInfo("w-alive", "web-1", 10, "running", NOW - 60, NOW - 1))
        registry.register_worker(store, WorkerInfo("w-recent", "web-2", 11, "running", NOW - 90, NOW - 45))
        for index in range(8):  # killed by the OOM killer one after the other
            registry.register_worker(store, WorkerInfo(f"w-dead{index}", "web-3", 20 + index, "dead", NOW, NOW - 5))
        registry.register_worker(store, WorkerInfo("w-silent", "web-4", 30, "running", NOW - 3000, NOW - 2400))
        snapshot = collect(store, NOW)
    finally:
        store.close()
    assert [row.id for row in snapshot.workers] == ["w-alive", "w-recent"]  # newest first
    assert snapshot.workers_gone == 9 and snapshot.workers_unresponsive == 10 and snapshot.workers_alive == 1
    console = Console(record=True, width=80, height=24, force_terminal=True, file=open(os.devnull, "w"))
    console.print(render(snapshot, width=80, height=24, now=NOW))
    text = console.export_text()
    assert len(text.rstrip("\n").splitlines()) <= 24
    assert "9 dead (not listed)" in text and "1 unresponsive" in text
    # the header line counts them the same way: 9 dead, 1 unresponsive (it said "10 unresponsive")
    header = next(line for line in text.splitlines() if line.startswith("lag "))
    assert "1 alive, 1 unresponsive, 9 dead" in header, header
    assert "web-1:10" in text and "web-2:11" in text and "web-3" not in text and "web-4" not in text
    assert "queue" in text  # the queue panel is still on screen
