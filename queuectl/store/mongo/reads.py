"""The MongoDB store's reads: single jobs, listings, and the aggregates the dashboard refreshes
(the counts per queue and state are counters: see :mod:`.counts`).
"""

from __future__ import annotations

from typing import Any

from queuectl.core.lifecycle import CLAIMABLE, HOOK_DUE
from queuectl.core.models import DEAD, FAILED, PROCESSING, STAGED, WAITING, Job
from queuectl.store.mongo.batches import STAGING
from queuectl.store.mongo.docs import doc_job
from queuectl.store.mongo.errors import translate_errors as _translate_errors

IN_CHUNK = 10_000  # ids per ``$in``: a request stays far below MongoDB's 16 MiB


class MongoReads:
    """Reading primitives; needs ``_jobs`` and ``_staging_states``."""

    _jobs: Any
    _staging_states: dict[str, str]

    @_translate_errors
    def get(self, job_id: str, staged: bool = False) -> Job | None:
        hidden = [STAGING] if staged else [STAGING, STAGED]
        doc = self._jobs.find_one({"_id": job_id, "state": {"$nin": hidden}})
        return doc_job(doc) if doc else None

    @_translate_errors
    def list_jobs(
        self,
        state: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before: float | None = None,
        batch: str | None = None,
        labels: list[str] | None = None,
    ) -> list[Job]:
        query: dict[str, Any] = {"state": {"$nin": [STAGING, STAGED]}}
        if labels:
            query["label_keys"] = {"$all": list(labels)}  # a multikey index on label_keys
        if batch is not None:
            query["batch"] = batch
        if before is not None:
            query["created_at"] = {"$lt": before}
        if state:
            query["state"] = state
        if queue:
            query["queue"] = queue
        cursor = self._jobs.find(query).sort("created_at", -1).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        found = {job_id: self._staging_states[job_id] for job_id in job_ids if job_id in self._staging_states}
        missing = [job_id for job_id in job_ids if job_id not in found]
        for start in range(0, len(missing), IN_CHUNK):
            docs = self._jobs.find({"_id": {"$in": missing[start : start + IN_CHUNK]}}, {"state": 1, "final_state": 1})
            found.update({doc["_id"]: doc.get("final_state") or doc["state"] for doc in docs})
        return found

    @_translate_errors
    def waiting_children(self, parent_id: str, any_state: bool = False, limit: int | None = None) -> list[Job]:
        named = {"$or": [{"after": parent_id}, {"on_failure_of": parent_id}]}
        if not any_state:
            return [doc_job(doc) for doc in self._jobs.find({"state": WAITING, **named})]
        visible = {"state": {"$nin": [STAGING, STAGED]}, **named}
        cursor = self._jobs.find(visible).sort([("created_at", 1), ("_id", 1)])
        return [doc_job(doc) for doc in (cursor.limit(limit) if limit is not None else cursor)]

    @_translate_errors
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        cursor = self._jobs.find({"state": PROCESSING, "lease_expires_at": {"$lt": now}}).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def hooks_due(self, limit: int = 1) -> list[Job]:
        cursor = self._jobs.find({"hook_state": HOOK_DUE}).sort("updated_at", 1).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    @_translate_errors
    def throughput(self, since: float, bucket: float = 60.0) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {"completed": {}, "failed": {}}
        for name, states, field in (
            ("completed", ["completed"], "finished_at"),
            ("failed", [FAILED, DEAD], "updated_at"),
        ):
            for state in states:
                cursor = self._jobs.find({"state": state, field: {"$gte": since}}, {field: 1, "_id": 0})
                for doc in cursor:
                    slot = int(doc[field] // bucket)
                    result[name][slot] = result[name].get(slot, 0) + 1
        return result

    @_translate_errors
    def recent_failures(self, limit: int = 5) -> list[Job]:
        cursor = self._jobs.find({"state": {"$in": [FAILED, DEAD]}}).sort("updated_at", -1).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def next_due(self, queues: list[str] | None) -> float | None:
        query: dict[str, Any] = {"state": {"$in": list(CLAIMABLE)}}
        if queues:
            query["queue"] = {"$in": queues}
        doc = self._jobs.find_one(query, {"run_at": 1}, sort=[("run_at", 1)])
        return doc["run_at"] if doc else None
