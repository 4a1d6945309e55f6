"""The parts mongomock cannot show: run against a real replica set when
``QUEUECTL_TEST_MONGODB_URL`` is set (see the README), skipped visibly otherwise."""

from __future__ import annotations

import select
import time
from typing import Any

import pytest

from queuectl.core import lifecycle
from queuectl.core.models import Lease
from queuectl.store.base import Store

from .world import job

pytestmark = pytest.mark.parametrize("store", ["mongodb"], indirect=True)


def stages(plan: Any) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "stage" in node:
                found.append(node["stage"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return found


def test_counts_are_a_covered_index_scan(store: Store) -> None:
    lifecycle.enqueue(store, [job(f"j{i}", queue=f"q{i % 2}") for i in range(20)])
    jobs: Any = store._jobs  # type: ignore[attr-defined]
    plan = jobs.database.command(
        "explain",
        {
            "aggregate": "jobs",
            "pipeline": [{"$sort": {"state": 1, "queue": 1}}, {"$project": {"_id": 0, "state": 1, "queue": 1}}],
            "cursor": {},
        },
        verbosity="executionStats",
    )
    assert "FETCH" not in stages(plan) and "COLLSCAN" not in stages(plan)


def test_the_claim_search_uses_a_partial_claim_index(store: Store) -> None:
    lifecycle.enqueue(store, [job("a")])
    plan = store.explain_claim(None, 2000.0)  # type: ignore[attr-defined]
    assert "IXSCAN" in stages(plan) and "COLLSCAN" not in stages(plan)


def test_the_change_stream_wakes_for_new_work_but_not_for_heartbeats(store: Store) -> None:
    waker = store.waker("w1")
    if waker is None:
        pytest.skip("this server offers no change streams (a standalone server)")
    try:
        lifecycle.enqueue(store, [job("a", created_at=time.time())])
        assert select.select([waker.fileno()], [], [], 5)[0] and waker.drain()
        [taken] = lifecycle.claim(store, "w1", None, time.time(), 30.0, 1)
        time.sleep(1.5)
        waker.drain()
        lifecycle.heartbeat(store, "w1", [(Lease("a", "w1", taken.attempts), "x" * 60_000)], time.time(), 30.0)
        assert not select.select([waker.fileno()], [], [], 2)[0]
    finally:
        waker.close()
