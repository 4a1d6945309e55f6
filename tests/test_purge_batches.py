"""A big purge commits in bounded batches and leaves the write lock free between them (issue 18,
found by ``scripts/soak.py``: purging 100,000 jobs on a loaded machine, two idle workers'
heartbeats waited 1.14 s for the lock, since a purge that takes the lock again at once leaves
SQLite's busy handler, which polls every 1-100 ms, almost no moment to get in)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from queuectl.core import lifecycle
from queuectl.core.defaults import PURGE_YIELD_S, RETENTION_BATCH
from queuectl.core.models import COMPLETED, Job
from queuectl.service import jobs
from queuectl.store.sql.sqlite import SqliteStore


def test_a_big_purge_commits_in_batches_and_pauses_between_them(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    now = time.time()
    count = 2 * RETENTION_BATCH + 500
    lifecycle.enqueue(
        store,
        [
            Job(f"j{i:05d}", "true", COMPLETED, attempts=1, created_at=now - 20, run_at=now - 20, finished_at=now - 10)
            for i in range(count)
        ],
    )
    batches: list[int] = []
    real_purge = store.purge

    def watched(*args: Any, **kwargs: Any) -> int:
        deleted = real_purge(*args, **kwargs)  # each call is one transaction of at most its limit
        batches.append(deleted)
        assert kwargs["limit"] <= RETENTION_BATCH
        return deleted

    store.purge = watched  # type: ignore[method-assign]
    pauses: list[float] = []
    assert jobs.purge(store, [COMPLETED], None, now, pause=pauses.append) == count
    assert batches == [RETENTION_BATCH, RETENTION_BATCH, 500]
    assert len(pauses) == 2 and all(0 < pause <= PURGE_YIELD_S for pause in pauses)  # between batches only
    store.close()
