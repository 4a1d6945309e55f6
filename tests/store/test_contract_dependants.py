"""``waiting_children(parent, any_state=True, limit=N)``: a job's dependants in every state, on
every backend (``show`` and ``tree`` read them)."""

from __future__ import annotations

from typing import Callable

from queuectl.core import lifecycle
from queuectl.core.models import Job
from queuectl.store.base import Store


def test_dependants_in_every_state_oldest_first_and_bounded(store: Store, make_job: Callable[..., Job]) -> None:
    lifecycle.enqueue(store, [make_job("p"), make_job("other")])
    children = [make_job(f"c{i}", after=["p"], created_at=1000.0 + i) for i in range(5)]
    children.append(make_job("both", after=["p"], on_failure_of="p", created_at=1010.0))
    children.append(make_job("rescue", on_failure_of="p", created_at=1011.0))
    children.append(make_job("unrelated", after=["other"], created_at=1012.0))
    lifecycle.enqueue(store, children)
    assert [job.id for job in store.waiting_children("p")] != []  # the waiting form is unchanged
    every = store.waiting_children("p", any_state=True)
    assert [job.id for job in every] == ["c0", "c1", "c2", "c3", "c4", "both", "rescue"]
    assert [job.id for job in store.waiting_children("p", any_state=True, limit=3)] == ["c0", "c1", "c2"]
    lifecycle.cancel(store, "c1", 2000.0)
    states = {job.id: job.state for job in store.waiting_children("p", any_state=True)}
    assert states["c1"] == "cancelled" and states["c0"] == "waiting"
    assert store.waiting_children("nobody", any_state=True) == []
