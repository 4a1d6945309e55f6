"""One simulated worker over a fault-injecting MongoStore, and the invariants checked after a fault.

The world holds what the worker believes it holds (its leases), counts every claim (a job run)
and every hook run, and, after the fault and the caller's retry, runs the repair pass as any
worker's housekeeper would. :meth:`World.check` then asserts the issue's invariants.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import mongomock

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.lifecycle import FINISHED, HOOK_DONE, blocked_by, parents_of
from queuectl.core.models import COMPLETED, PROCESSING, WAITING, Job, Lease
from queuectl.store.mongo.batches import STAGING
from queuectl.store.mongo.store import MongoStore

from .faults import Faults, FaultyClient

T = 1000.0
LEASE = 30.0
WORKER = "w1"


def job(job_id: str, **fields: Any) -> Job:
    fields.setdefault("created_at", T)
    return Job(id=job_id, command="true", updated_at=fields["created_at"], run_at=fields["created_at"], **fields)


class World:
    def __init__(self) -> None:
        self.faults = Faults()
        self.client = FaultyClient(mongomock.MongoClient(), self.faults)
        self.store = MongoStore(self.client, db_name="faults", host_clock=lambda: T)
        self.config = RuntimeConfig(lease=LEASE, max_retries=0)
        self.held: dict[str, Lease] = {}
        self.runs: Counter[tuple[str, int]] = Counter()
        self.hook_runs: Counter[str] = Counter()
        self.hook_results: list[str] = []

    # --- the worker -------------------------------------------------------------------------

    def take(self, jobs: list[Job]) -> None:
        for taken in jobs:
            assert taken.id not in self.held, f"job {taken.id} claimed again while its lease was live"
            self.held[taken.id] = Lease(taken.id, WORKER, taken.attempts)
            self.runs[(taken.id, taken.attempts)] += 1

    def claim(self, limit: int, now: float = T) -> None:
        self.take(lifecycle.claim(self.store, WORKER, None, now, LEASE, limit))

    def complete_all(self, now: float) -> None:
        for job_id, lease in list(self.held.items()):
            assert lifecycle.finish(self.store, lease, lifecycle.success_outcome(now, "ok", 1.0))
            del self.held[job_id]

    def run_hooks(self, now: float) -> None:
        """The housekeeper's hook chore: a result is kept until it is written."""
        self.write_hook_results(now)
        while (hooked := lifecycle.claim_hook(self.store, now)) is not None:
            self.hook_runs[hooked.id] += 1
            self.hook_results.append(hooked.id)
            self.write_hook_results(now)

    def write_hook_results(self, now: float) -> None:
        while self.hook_results:
            lifecycle.finish_hook(self.store, self.hook_results[-1], None, now)
            self.hook_results.pop()

    def repair(self, now: float) -> None:
        """What any worker's housekeeper does on its next passes (no fault armed)."""
        lifecycle.repair(self.store, now, grace=0.0)
        lifecycle.resettle_waiting(self.store, now)
        self.run_hooks(now)
        self.store.publish_due(float("inf"))  # a later pass: what writers left in outboxes

    # --- the invariants ---------------------------------------------------------------------

    def docs(self) -> dict[str, dict[str, Any]]:
        with self.faults.lock:
            return {doc["_id"]: doc for doc in self.store._jobs._collection.find()}

    def state(self, job_id: str) -> str | None:
        doc = self.docs().get(job_id)
        return None if doc is None else str(doc["state"])

    def check(self) -> None:
        docs = self.docs()
        staged = [job_id for job_id, doc in docs.items() if doc["state"] == STAGING or "staging_batch" in doc]
        assert not staged, f"half-enqueued jobs left: {staged}"
        batches = list(self.store._batches._collection.find({"state": {"$ne": "aborted"}}))
        assert not batches, f"batches left unfinished: {batches}"
        for job_id, doc in docs.items():
            if doc["state"] == PROCESSING:  # only a live lease this worker knows it holds
                lease = self.held.get(job_id)
                assert lease is not None and lease.attempt == doc["attempts"], f"job {job_id} stuck in processing"
            assert "settle_at" not in doc, f"job {job_id}'s dependants were never settled"
            if doc["state"] in FINISHED and doc.get("on_finish"):
                assert doc.get("hook_state") == HOOK_DONE, f"job {job_id}'s hook is {doc.get('hook_state')}"
                assert self.hook_runs[job_id] == 1, f"job {job_id}'s hook ran {self.hook_runs[job_id]} times"
            elif doc["state"] not in FINISHED and doc.get("hook_state") != HOOK_DONE:
                assert self.hook_runs[job_id] == 0, f"job {job_id}'s hook ran before it finished"
            if doc["state"] == WAITING:
                self._check_waiting(docs, job_id)
        twice = [run for run, count in self.runs.items() if count > 1]
        assert not twice, f"runs handed out twice for one attempt: {twice}"
        self._check_events(docs)

    def _check_events(self, docs: dict[str, dict[str, Any]]) -> None:
        """Issue 13: every event published (no outbox left), each once: a job's enqueued event,
        and the event of the state it finished in."""
        with self.faults.lock:
            log = list(self.store._events._collection.find())
        unpublished = [job_id for job_id, doc in docs.items() if doc.get("outbox")]
        assert not unpublished, f"events never published: {unpublished}"
        for job_id, doc in docs.items():
            rows = [row for row in log if row.get("job_id") == job_id]
            enqueued = sum(row["kind"] == "enqueued" for row in rows)
            assert enqueued == 1, f"job {job_id}: enqueued logged {enqueued} times"
            if doc["state"] in FINISHED:  # its end: the state's own event, or a recovery's lease_lost
                ends = sum(row["kind"] in (doc["state"], "lease_lost") and row["state"] == doc["state"] for row in rows)
                assert ends == 1, f"job {job_id} {doc['state']}: logged {ends} times"

    def _check_waiting(self, docs: dict[str, dict[str, Any]], job_id: str) -> None:
        child = Job.from_dict({**docs[job_id], "id": job_id})
        states = {parent: docs[parent]["state"] for parent in parents_of(child) if parent in docs}
        for parent, parent_state in states.items():
            if parent_state in FINISHED:
                assert blocked_by(child, parent, parent_state) is None, f"job {job_id} never cancelled"
        may_start = all(states.get(p) == COMPLETED for p in child.after) and (
            not child.on_failure_of or states.get(child.on_failure_of) in ("dead", "cancelled")
        )
        assert not may_start, f"job {job_id} left waiting although its parents allow it to start"
