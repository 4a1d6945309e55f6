"""Finding 10: the change stream wakes idle workers only for what makes a job claimable, ships
no job contents, and survives its errors (reopened with backoff; each failure wakes the worker
once, since events may have been missed). Polling stays the fallback."""

from __future__ import annotations

import select
import threading
import time
from typing import Any

import mongomock

from queuectl.store.mongo.store import MongoStore
from queuectl.store.mongo.waker import WAKING_EVENTS, ChangeStreamWaker


def matches(event: dict[str, Any]) -> bool:
    """The $match stage of WAKING_EVENTS, evaluated by mongomock's query engine."""
    collection: Any = mongomock.MongoClient().db.events
    collection.insert_one(event)
    return collection.count_documents(WAKING_EVENTS[0]["$match"]) == 1


def update(**fields: Any) -> dict[str, Any]:
    return {"operationType": "update", "updateDescription": {"updatedFields": fields}}


def test_only_events_that_make_a_job_claimable_wake_anyone() -> None:
    assert matches({"operationType": "insert", "fullDocument": {"ready": True, "output": "x"}})
    assert matches(update(ready=True))  # a delayed job's time came, a retry's backoff ended
    assert matches(update(state="pending"))  # a staged batch published, a job released or retried
    assert not matches({"operationType": "insert", "fullDocument": {"state": "enqueuing"}})  # staged
    assert not matches(update(lease_expires_at=5.0, output="64 KiB of tail"))  # a heartbeat
    assert not matches(update(state="processing", locked_by="w1"))  # a claim
    assert not matches(update(state="completed"))  # an outcome
    assert not matches(update(state="failed", ready=False, run_at=9.0))  # a retry waiting out its backoff


def test_events_are_projected_to_their_id() -> None:
    assert WAKING_EVENTS[-1] == {"$project": {"_id": 1, "operationType": 1}}


class Stream:
    def __init__(self, events: list[Any], fail_after: bool) -> None:
        self.events = events
        self.fail_after = fail_after
        self.alive = True

    def try_next(self) -> Any:
        if self.events:
            return self.events.pop(0)
        if self.fail_after:
            raise ConnectionError("cursor killed by an election")
        time.sleep(0.01)
        return None

    def close(self) -> None:
        self.alive = False


def readable(fd: int, timeout: float = 2.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_failing_stream_is_reopened_with_backoff_and_wakes_the_worker() -> None:
    opened: list[Stream] = []
    sleeps: list[float] = []
    gate = threading.Event()

    def opener() -> Stream:
        stream = Stream([{"_id": "e"}], fail_after=len(opened) < 2)
        opened.append(stream)
        return stream

    def sleep(seconds: float) -> bool:
        sleeps.append(seconds)
        return gate.is_set()

    waker = ChangeStreamWaker(opener, Stream([], fail_after=True), sleep=sleep)
    try:
        deadline = time.monotonic() + 5
        while len(opened) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(opened) == 3 and waker.reopened == 3
        assert sleeps[:3] == [0.5, 1.0, 2.0]  # backoff doubles while the stream keeps failing
        assert readable(waker.fileno()) and waker.drain()
    finally:
        gate.set()
        waker.close()


def test_mongomock_has_no_change_streams_so_workers_poll() -> None:
    assert MongoStore(mongomock.MongoClient(), db_name="w").waker("w1") is None
