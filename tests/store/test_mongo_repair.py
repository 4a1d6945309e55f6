"""MongoDB settles a finished job's dependants in steps after its outcome; a worker that dies in
between leaves them waiting. ``lifecycle.resettle_waiting`` (the housekeeper runs it) repairs that."""

from __future__ import annotations

from typing import Any

import mongomock
import pytest

from queuectl.core import lifecycle
from queuectl.core.models import Job
from queuectl.store.mongo.store import MongoStore


@pytest.fixture
def store() -> MongoStore:
    return MongoStore(mongomock.MongoClient(), db_name="repair")


def job(job_id: str, **fields: Any) -> Job:
    return Job(id=job_id, command="true", created_at=1000.0, updated_at=1000.0, run_at=1000.0, **fields)


def stored(store: MongoStore, job_id: str) -> Job:
    found = store.get(job_id)
    assert found is not None, f"job {job_id} is not in the store"
    return found


@pytest.mark.parametrize(("parent_state", "child_state"), [("completed", "pending"), ("dead", "cancelled")])
def test_children_left_waiting_by_a_dead_worker_are_settled(
    store: MongoStore, parent_state: str, child_state: str
) -> None:
    # Given a child waiting on a parent whose outcome was written, but whose settling step never ran
    lifecycle.enqueue(store, [job("p"), job("c", after=["p"]), job("grandchild", after=["c"])])
    store._jobs.update_one({"_id": "p"}, {"$set": {"state": parent_state}})
    assert stored(store, "c").state == "waiting"

    # When a worker runs the repair
    lifecycle.resettle_waiting(store, 2000.0)

    # Then the child is settled as if the parent had just finished (and its own children with it)
    assert stored(store, "c").state == child_state
    assert stored(store, "grandchild").state == ("waiting" if child_state == "pending" else "cancelled")


def test_children_of_unfinished_parents_stay_waiting(store: MongoStore) -> None:
    lifecycle.enqueue(store, [job("p"), job("c", after=["p"])])
    lifecycle.resettle_waiting(store, 2000.0)
    assert stored(store, "c").state == "waiting"
