"""Findings 11, 12, 14: indexes as partial filters (not sparse on fields every document has),
legacy ones dropped, a changed one replaced rather than failing every command, nothing written
when all is in place (a read-only user can open the store); the aggregates read indexes only;
a huge id list never makes one request over 16 MiB."""

from __future__ import annotations

from typing import Any

import mongomock
import pymongo.errors as perr
import pytest

from queuectl.core import lifecycle
from queuectl.store.mongo import reads
from queuectl.store.mongo.indexes import JOB_INDEXES
from queuectl.store.mongo.store import MongoStore

from .world import T, World, job

LEGACY = {  # what the store built before issue 12
    "claim_queue": [("state", 1), ("ready", 1), ("queue", 1), ("priority", -1), ("created_at", 1)],
    "not_due": [("ready", 1), ("run_at", 1)],
    "after": [("after", 1)],
    "hooks": [("hook_state", 1), ("updated_at", 1)],
}


def test_no_index_is_sparse_on_a_field_every_job_has() -> None:
    every_job_has = {"after", "on_failure_of", "hook_state", "ready", "state", "queue"}
    for name, (keys, options) in JOB_INDEXES.items():
        if options.get("sparse"):
            assert keys[0][0] not in every_job_has, name
    assert JOB_INDEXES["not_due_v2"][1]["partialFilterExpression"] == {"ready": False}


def test_legacy_indexes_are_dropped_once_the_new_ones_exist() -> None:
    client: Any = mongomock.MongoClient()
    jobs = client.q.jobs
    for name, keys in LEGACY.items():
        jobs.create_index(keys, name=name, sparse=True)
    jobs.create_index([("tag", 1)], name="ops_tag")  # an operator's own index stays

    MongoStore(client, db_name="q")

    names = set(jobs.index_information())
    assert names == {"_id_", "ops_tag", *JOB_INDEXES}


def test_an_index_changed_under_its_name_is_replaced_not_fatal() -> None:
    client: Any = mongomock.MongoClient()
    client.q.jobs.create_index([("state", 1)], name="due")  # same name, other keys (hand-made)

    MongoStore(client, db_name="q")  # used to fail every command with IndexKeySpecsConflict

    assert client.q.jobs.index_information()["due"]["key"] == [("state", 1), ("run_at", 1)]


class ReadOnly:
    """A collection whose user may read but not build indexes."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.created: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def create_index(self, keys: Any, **options: Any) -> str:
        self.created.append(options["name"])
        raise perr.OperationFailure("not authorized on q to execute command createIndexes", 13)


def test_a_complete_set_of_indexes_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    from queuectl.store.mongo.indexes import ensure_indexes

    client: Any = mongomock.MongoClient()
    MongoStore(client, db_name="q")
    read_only = ReadOnly(client.q.jobs)
    ensure_indexes(read_only, JOB_INDEXES)
    assert read_only.created == [] and capsys.readouterr().err == ""

    client.q.jobs.drop_index("due")
    ensure_indexes(read_only, JOB_INDEXES)  # a missing index and no right to build it: a warning
    assert read_only.created == ["due"]
    assert "cannot build MongoDB index due (not authorized)" in capsys.readouterr().err


def test_counts_and_durations_read_the_counters_and_only_the_jobs_still_marked() -> None:
    w = World()
    lifecycle.enqueue(w.store, [job("a", queue="q1"), job("b", queue="q2"), job("c", queue="q2")])
    w.claim(1)
    w.complete_all(T + 2)
    found: list[int] = []
    original = w.store._jobs.find

    def spy(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        found.append(len(list(original(query, *args, **kwargs))))
        return original(query, *args, **kwargs)

    w.store._jobs.find = spy  # type: ignore[method-assign]
    assert w.store.counts() == {"q1": {"completed": 1}, "q2": {"pending": 2}}
    assert found == [3]  # before a repair pass: the marked jobs, each read by the index on the mark
    w.store._jobs.find = original  # type: ignore[method-assign]
    w.store.repair(T + 3)
    w.store._jobs.find = spy  # type: ignore[method-assign]
    found.clear()
    assert w.store.counts() == {"q1": {"completed": 1}, "q2": {"pending": 2}}
    assert w.store.duration_totals() == (1, 1.0)
    assert found == [0, 0]  # after it: the counters alone, not one job
    assert JOB_INDEXES["counting_v1"] == ([("cdirty", 1)], {"sparse": True})


def test_a_huge_id_list_is_asked_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    lifecycle.enqueue(w.store, [job(f"j{i}") for i in range(25)])
    monkeypatch.setattr(reads, "IN_CHUNK", 10)
    finds: list[int] = []
    original = w.store._jobs._collection.find

    def spy(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        finds.append(len(query["_id"]["$in"]))
        return original(query, *args, **kwargs)

    w.store._jobs._collection.find = spy
    assert len(w.store.job_states([f"j{i}" for i in range(25)])) == 25
    assert finds == [10, 10, 5]


def test_a_file_of_children_looks_each_parent_up_once() -> None:
    w = World()
    lifecycle.enqueue(w.store, [job("p")])
    asked: list[list[str]] = []
    original = w.store.job_states

    def spy(job_ids: list[str]) -> dict[str, str]:
        asked.append(list(job_ids))
        return original(job_ids)

    w.store.job_states = spy  # type: ignore[method-assign]
    lifecycle.enqueue(w.store, [job(f"c{i}", after=["p"]) for i in range(50)])

    assert asked == [["p"], ["p"]]  # the start states, then the parents re-checked after the commit
    assert len(w.store.list_jobs(state="waiting", limit=100)) == 50
