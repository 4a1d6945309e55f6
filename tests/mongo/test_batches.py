"""Finding 3 (and 4): a bulk enqueue is all-or-nothing through one commit document, whatever
dies when; the sweeper (any worker's repair pass) finishes committed batches and removes
abandoned ones, freeing their ids and unique keys."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import BulkWriteError

from queuectl.core import lifecycle
from queuectl.core.errors import QueuectlError, StoreUnavailable
from queuectl.store.mongo import batches

from .world import T, World, job


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "CHUNK", 2)


def file(n: int = 5) -> list[Any]:
    return [job(f"j{i}", unique_key="k" if i == 0 else None) for i in range(n)]


def visible(w: World) -> list[str]:
    return sorted(j.id for j in w.store.list_jobs(limit=100))


class Died(BaseException):
    """The client process dying (nothing after this runs, not even cleanup of ours)."""


def test_a_client_dying_while_staging_leaves_nothing_once_swept() -> None:
    w = World()

    def dies_midway() -> Any:
        yield from file()[:3]
        w.store._abandon = lambda batch: None  # type: ignore[method-assign,assignment,misc]  # no cleanup: dead
        raise Died

    with pytest.raises(Died):
        w.store.insert_jobs(dies_midway())
    assert visible(w) == [] and w.docs()  # staged, invisible, holding ids and the key

    w.store.sweep_batches(T + batches.ABANDONED_AFTER_S - 1)
    assert w.docs(), "a batch still inside its time is left alone (its client may be slow)"
    w.store.sweep_batches(T + batches.ABANDONED_AFTER_S + 1)

    assert w.docs() == {}  # ids and unique key free again
    del w.store._abandon
    assert lifecycle.enqueue(w.store, file()) == 5 and visible(w) == [f"j{i}" for i in range(5)]


def test_a_client_dying_right_after_the_commit_point_has_its_batch_published_by_the_sweeper() -> None:
    w = World()
    w.store._publish = lambda batch: (_ for _ in ()).throw(Died())  # type: ignore[method-assign,assignment,misc]
    with pytest.raises(Died):
        w.store.insert_jobs(file())
    assert visible(w) == []
    del w.store._publish

    w.store.sweep_batches(T)

    assert visible(w) == [f"j{i}" for i in range(5)]
    w.store.publish_due(float("inf"))  # their enqueued events, as the repair pass publishes them
    w.check()


def test_a_slow_client_whose_batch_was_swept_cannot_commit_it_later() -> None:
    w = World()

    def slow() -> Any:
        yield from file()[:3]
        w.store.sweep_batches(T + batches.ABANDONED_AFTER_S + 1)  # meanwhile, on another host
        yield from file()[3:]

    with pytest.raises(batches.BatchAborted, match="run it again"):
        w.store.insert_jobs(slow())
    assert w.docs() == {} and visible(w) == []


def test_a_write_concern_error_of_a_bulk_insert_is_an_outage_not_a_crash() -> None:
    # finding 4: writeErrors is [] when only the write concern failed (it used to be an IndexError)
    w = World()
    error = BulkWriteError(
        {"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}]}
    )
    original = w.store._jobs._collection.insert_many
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            original(*args, **kwargs)  # applied on the primary; majority not confirmed in time
            raise error
        return original(*args, **kwargs)

    w.store._jobs._collection.insert_many = failing
    assert lifecycle.enqueue(w.store, file(1)) == 1  # resolved by reading: the job was staged
    assert visible(w) == ["j0"]

    calls.clear()

    def always(*args: Any, **kwargs: Any) -> Any:
        raise error

    w.store._jobs._collection.insert_many = always
    with pytest.raises(StoreUnavailable):
        lifecycle.enqueue(w.store, [job("x")])
    assert visible(w) == ["j0"]


def test_a_duplicate_id_in_a_file_is_a_conflict_and_inserts_nothing() -> None:
    w = World()
    with pytest.raises(QueuectlError, match="j1"):
        lifecycle.enqueue(w.store, [*file(3), job("j1")])
    assert w.docs() == {}
