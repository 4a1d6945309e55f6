"""Issue 13 on MongoDB: an event rides in its state change's own update (the outbox) and is
published into the log exactly once, by the writer right after or by any worker's repair pass."""

from __future__ import annotations

from typing import Any

import mongomock
import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreUnavailable
from queuectl.core.models import COMPLETED, Lease
from queuectl.store.mongo.events import PUBLISH_GRACE_S
from queuectl.store.mongo.store import MongoStore

from .world import T, job


def fresh() -> MongoStore:
    return MongoStore(mongomock.MongoClient(), db_name="outbox", host_clock=lambda: T)


def raw(store: MongoStore, job_id: str) -> dict[str, Any]:
    doc = store._jobs.find_one({"_id": job_id})  # test-only access: the outbox itself
    assert doc is not None
    return dict(doc)


def failing_publish(*_: Any) -> int:
    raise StoreUnavailable("the server went away")


def test_an_event_whose_publishing_failed_waits_in_the_outbox_for_the_repair_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = fresh()
    store.insert_job(job("a"))
    (claimed,) = store.claim("w1", None, T, 30)
    monkeypatch.setattr(store, "publish", failing_publish)
    assert lifecycle.finish(store, Lease("a", "w1", claimed.attempts), lifecycle.success_outcome(T + 1, "ok", 0.1))
    monkeypatch.undo()

    assert raw(store, "a")["state"] == COMPLETED and [e["kind"] for e in raw(store, "a")["outbox"]] == ["completed"]
    assert [e.kind for e in store.read_events()] == ["enqueued", "claimed"]  # not published yet
    assert store.purge([COMPLETED], T + 100) == 0  # kept until its events are out
    assert store.repair(T + 1) == 0  # younger than the grace: its writer may be publishing it now
    assert store.repair(T + 1 + PUBLISH_GRACE_S) == 1
    assert [e.kind for e in store.read_events()] == ["enqueued", "claimed", "completed"]
    assert "outbox" not in raw(store, "a") and "outbox_at" not in raw(store, "a")
    assert store.repair(T + 100) == 0  # published once


def test_a_publisher_that_died_before_clearing_the_outbox_publishes_nothing_twice() -> None:
    store = fresh()
    store.insert_job(job("a"))
    entries = [dict(entry) for entry in store._events.find()]
    assert len(entries) == 1
    # as if the publisher died after inserting but before pulling: the entry is back in the outbox
    outbox = [{k: v for k, v in entries[0].items() if k not in ("_id", "job_id")}]
    store._jobs.update_one({"_id": "a"}, {"$set": {"outbox": outbox, "outbox_at": T}})
    assert store.publish(["a"]) == 0
    assert [e.seq for e in store.read_events()] == [1]
    assert "outbox" not in raw(store, "a")


def test_two_publishers_at_once_log_each_event_once() -> None:
    store = fresh()
    store.publish = lambda job_ids: 0  # type: ignore[method-assign]  # writers publish nothing inline
    lifecycle.enqueue(store, [job(f"j{i}", created_at=T + i) for i in range(5)])
    del store.publish
    ids = [f"j{i}" for i in range(5)]
    docs = list(store._jobs.find({"_id": {"$in": ids}}, {"outbox": 1, "queue": 1}))
    store.publish(ids)
    # a second publisher read the same outboxes before the first inserted: its inserts collide on
    # the events' own ids and are skipped (their reserved numbers stay unused: a gap readers wait out)
    late = [{**entry, "job_id": doc["_id"]} for doc in docs for entry in doc["outbox"]]
    store._insert_events(late)
    log = store.read_events()
    assert sorted(e.job_id or "" for e in log) == ids
    assert [e.seq for e in log] == [1, 2, 3, 4, 5]


def test_a_staged_batch_logs_nothing_until_it_is_committed() -> None:
    store = fresh()
    store._commit = lambda batch: (_ for _ in ()).throw(StoreUnavailable("lost"))  # type: ignore[method-assign,assignment,misc]
    store._abandon = lambda batch: None  # type: ignore[method-assign,assignment,misc]
    with pytest.raises(StoreUnavailable):
        store.insert_jobs([job(f"j{i}") for i in range(3)])
    store.publish_due(float("inf"))
    assert store.read_events() == []  # staged jobs are invisible: so are their events
