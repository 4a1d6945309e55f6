"""Finding 8 (and 2): settling is bounded in time. A parent with many children does not block
the worker that finished it (its heartbeats must go on); the outbox mark its outcome carried
brings the repair pass back until every child is settled."""

from __future__ import annotations

import pytest

from queuectl.core import lifecycle
from queuectl.core.lifecycle import settling

from .world import T, World, job

CHILDREN = 120


def test_a_parent_with_many_children_is_settled_in_bounded_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    lifecycle.enqueue(w.store, [job("p"), *(job(f"c{i}", after=["p"]) for i in range(CHILDREN))])
    w.claim(1)
    monkeypatch.setattr(settling, "INLINE_SETTLE_S", 0.0)  # the worker's share: as little as possible

    assert lifecycle.finish(w.store, w.held.pop("p"), lifecycle.success_outcome(T + 1, "ok", 1.0))

    pending = [j for j in w.store.list_jobs(state="pending", limit=1000)]
    assert len(pending) < CHILDREN  # the worker went back to its loop
    assert w.store.unsettled(T + 100) == [("p", "completed", T + 1)]  # and the mark says what is left

    passes = 0
    while w.store.unsettled(T + 100):
        lifecycle.repair(w.store, T + 100, grace=0.0)
        passes += 1
        assert passes < 50
    assert len(w.store.list_jobs(state="pending", limit=1000)) == CHILDREN
    w.check()


def test_a_repair_pass_stops_at_its_budget_and_the_next_one_goes_on() -> None:
    w = World()
    lifecycle.enqueue(w.store, [job("p"), *(job(f"c{i}", after=["p"]) for i in range(CHILDREN))])
    w.claim(1)
    w.store.mark_settled = lambda job_id, mark: None  # type: ignore[method-assign]  # a worker dies before clearing
    w.store.publish = lambda job_ids: 0  # type: ignore[method-assign]  # (its events wait in the outbox)
    w.faults.arm(3, "before")  # ... and before settling: its outcome is all that was written
    lifecycle.finish(w.store, w.held.pop("p"), lifecycle.success_outcome(T + 1, "ok", 1.0))
    del w.store.mark_settled
    del w.store.publish

    released = settling.settle_marked(w.store, T + 100, grace=0.0, budget=0.0)
    assert released <= 1 and w.store.unsettled(T + 100)
    for _ in range(CHILDREN):  # each later pass goes on where the last stopped (on a loaded
        # machine the default time budget may end a pass before all the children are released)
        if not w.store.unsettled(T + 100):
            break
        settling.settle_marked(w.store, T + 100, grace=0.0)
    assert len(w.store.list_jobs(state="pending", limit=1000)) == CHILDREN and not w.store.unsettled(T + 100)
