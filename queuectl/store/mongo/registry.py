"""The MongoDB store's small collections: cron schedules, paused queues, runtime config, the
worker registry. A mixin of :class:`~queuectl.store.mongo.store.MongoStore`, kept apart from the jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from queuectl.core.errors import Conflict, NotFound
from queuectl.core.models import Job, Schedule, WorkerInfo
from queuectl.store.mongo.docs import job_doc
from queuectl.store.mongo.errors import translate_errors as _translate_errors


class MongoRegistry:
    """Schedules, queues, config and workers; needs the collections and ``notify``."""

    _jobs: Any
    _schedules: Any
    _queues: Any
    _config: Any
    _workers: Any

    if TYPE_CHECKING:  # provided by MongoStore

        def notify(self, stop: bool = False) -> None: ...

    # --- cron schedules ---------------------------------------------------------------------

    @_translate_errors
    def add_schedule(self, schedule: Schedule) -> None:
        import pymongo.errors as perr

        doc = schedule.to_dict()
        doc["_id"] = doc.pop("name")
        try:
            self._schedules.insert_one(doc)
        except perr.DuplicateKeyError:
            raise Conflict(f"a schedule named {schedule.name!r} already exists") from None

    def _find_schedules(self, query: dict[str, Any]) -> list[Schedule]:
        docs = self._schedules.find(query).sort("_id", 1)
        return [Schedule(name=d.pop("_id"), **d) for d in docs]

    @_translate_errors
    def list_schedules(self) -> list[Schedule]:
        return self._find_schedules({})

    @_translate_errors
    def remove_schedule(self, name: str) -> None:
        if self._schedules.delete_one({"_id": name}).deleted_count == 0:
            raise NotFound(f"no schedule named {name!r}; see queuectl schedule list")

    @_translate_errors
    def set_schedule_paused(self, name: str, paused: bool, next_fire_at: float | None = None) -> None:
        update: dict[str, Any] = {"paused": paused}
        if next_fire_at is not None:
            update["next_fire_at"] = next_fire_at
        if self._schedules.update_one({"_id": name}, {"$set": update}).matched_count == 0:
            raise NotFound(f"no schedule named {name!r}; see queuectl schedule list")

    @_translate_errors
    def due_schedules(self, now: float) -> list[Schedule]:
        return self._find_schedules({"paused": False, "next_fire_at": {"$lte": now}})

    @_translate_errors
    def fire_schedule(self, name: str, slot: float, next_fire_at: float, job: Job) -> bool:
        import pymongo.errors as perr

        # insert first, then move the schedule on: a crash in between leaves the slot due, and the
        # next worker's insert of the same slot-derived id is refused, so no fire is lost or doubled
        if self._schedules.count_documents({"_id": name, "next_fire_at": slot, "paused": False}) == 0:
            return False
        try:
            self._jobs.insert_one(job_doc(job))
            inserted = True
        except perr.DuplicateKeyError:
            inserted = False  # the slot's job exists already, or its unique key is still held
        moved = self._schedules.update_one(
            {"_id": name, "next_fire_at": slot},
            {"$set": {"next_fire_at": next_fire_at, "last_fire_at": slot}},
        ).modified_count
        if inserted:
            self.notify()
        return inserted and bool(moved)

    # --- queues, config, workers ------------------------------------------------------------

    @_translate_errors
    def set_paused(self, queue: str, paused: bool) -> None:
        self._queues.update_one({"_id": queue}, {"$set": {"paused": paused}}, upsert=True)
        if not paused:
            self.notify()

    @_translate_errors
    def paused_queues(self) -> set[str]:
        return {doc["_id"] for doc in self._queues.find({"paused": True}, {"_id": 1})}

    @_translate_errors
    def config_values(self) -> dict[str, str]:
        return {doc["_id"]: doc["value"] for doc in self._config.find()}

    @_translate_errors
    def set_config(self, key: str, value: str) -> None:
        self._config.update_one({"_id": key}, {"$set": {"value": value}}, upsert=True)

    @_translate_errors
    def register_worker(self, info: WorkerInfo) -> None:
        doc = info.to_dict()
        doc["_id"] = doc.pop("id")
        self._workers.replace_one({"_id": info.id}, doc, upsert=True)

    @_translate_errors
    def beat_worker(self, worker_id: str, now: float, state: str, current_jobs: list[str]) -> bool:
        doc = self._workers.find_one_and_update(
            {"_id": worker_id},
            {"$set": {"last_heartbeat": now, "state": state, "current_jobs": current_jobs}},
            projection={"stop_requested": 1},
        )
        return bool(doc and doc.get("stop_requested"))

    @_translate_errors
    def list_workers(self) -> list[WorkerInfo]:
        docs = self._workers.find().sort("started_at", -1)
        return [WorkerInfo(id=d.pop("_id"), **d) for d in docs]

    @_translate_errors
    def request_stop(self, worker_ids: list[str] | None = None) -> int:
        query: dict[str, Any] = {"state": {"$ne": "stopped"}}
        if worker_ids:
            query["_id"] = {"$in": worker_ids}
        return self._workers.update_many(query, {"$set": {"stop_requested": True}}).matched_count

    @_translate_errors
    def prune_workers(self, seen_before: float) -> int:
        query = {"$or": [{"state": "stopped"}, {"last_heartbeat": {"$lt": seen_before}}]}
        return self._workers.delete_many(query).deleted_count

