"""A claim promotes the jobs whose time has come (issue 18, found by ``scripts/soak.py``): a mass of
jobs due at once -- a published ``enqueue --file`` of 150,000 lines, where every job starts not
ready, or a million ``--delay 1h`` jobs an hour later -- must not be promoted in one claim's
transaction. Unbounded, the first claim after a 150,000-line ``enqueue --file`` held SQLite's
write lock for 22 s on a loaded 2-core machine (longer than the 10 s any other writer waits)."""

from __future__ import annotations

from typing import Callable

import pytest

from queuectl.core import lifecycle
from queuectl.core.models import Job
from queuectl.store.base import Store
from queuectl.store.sql import claims as sql_claims

NOW = 1000.0
BOUND = 10


def promoted_pending(store: Store) -> int:
    """SQL stores: pending jobs in the claim indexes (test-only access to the due flag)."""
    row = store._conn.execute("SELECT count(*) FROM jobs WHERE ready = 1 AND state = 'pending'").fetchone()  # type: ignore[attr-defined]
    return int(row[0])


def test_a_claim_promotes_a_bounded_number_of_due_jobs_earliest_first(
    store: Store, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_claims, "PROMOTE_BATCH", BOUND, raising=False)
    # 35 jobs not due when enqueued (so not ready), all due by the time of the claims
    lifecycle.enqueue(store, [make_job(f"j{i:02d}", created_at=NOW + i, run_at=NOW + 100 + i) for i in range(35)])
    later = NOW + 500
    first = store.claim("w1", None, later, 30.0)
    assert [job.id for job in first] == ["j00"]
    if hasattr(store, "_conn"):  # SQL: one claim's transaction promoted at most BOUND of them
        assert promoted_pending(store) <= BOUND - 1
    # later claims promote the rest: every job is claimed once, earliest run_at first
    claimed = [job.id for job in first]
    while batch := store.claim("w1", None, later, 30.0, limit=4):
        claimed += [job.id for job in batch]
    assert claimed == [f"j{i:02d}" for i in range(35)]
