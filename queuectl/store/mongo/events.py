"""The attempt history and the event log on MongoDB: outbox entries published exactly once.

Without multi-document transactions an event cannot be inserted "with" the state change it
reports. So the change's own single-document update also pushes the event into the job's
``outbox`` array (and stamps ``outbox_at``): the event exists exactly when the change does. A
publisher then copies outbox entries into the ``events`` collection and pulls them from the
job. Each entry carries an id of its own (``eid``, unique in ``events``), so publishing twice
(two workers, a retry after a lost reply) inserts it once; whoever publishes, the inline call
right after the write or any worker's repair pass (:meth:`MongoLog.publish_due`), the log ends
up with every event once. Sequence numbers come from one counter document, reserved in blocks
at publishing: a number can become visible after a higher one (two publishers at once) or never
(a publisher that died holding it); readers wait a little at a gap
(:mod:`queuectl.service.events`).

An attempt's row is pushed onto the job's ``history`` array in the same update as its outcome;
its output goes to a separate ``outputs`` array sliced to the latest ``keep_outputs`` (the rows
stay small). Both go with the job when it is purged.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from queuectl.core.models import Attempt, Event
from queuectl.store.mongo.errors import translate_errors as _translate_errors

EVENT_COUNTER = "events"
PUBLISH_PAGE = 500  # jobs with unpublished events one repair pass publishes per page
PUBLISH_GRACE_S = 2.0  # outbox entries younger than this are left to the writer that publishes them


def new_eid() -> str:
    return os.urandom(8).hex()


def outbox_entry(event: Event) -> dict[str, Any]:
    """An event as it waits in a document's outbox (job id and queue come from the document)."""
    entry: dict[str, Any] = {"eid": new_eid(), "at": event.at, "kind": event.kind}
    for name in ("queue", "state"):
        value = getattr(event, name)
        if value is not None:
            entry[name] = value
    if event.data:
        entry["data"] = event.data
    return entry


def with_outbox(update: dict[str, Any], events: Sequence[Event], at: float) -> None:
    """Add ``events`` to a document update: pushed to its outbox, in the same atomic write."""
    if events:
        update.setdefault("$push", {})["outbox"] = {"$each": [outbox_entry(event) for event in events]}
        update.setdefault("$set", {})["outbox_at"] = at


def with_attempt(update: dict[str, Any], attempt: Attempt, keep_outputs: int) -> None:
    """Add an attempt's row (and its output, sliced to the latest ``keep_outputs``) to an update."""
    row = {name: value for name, value in attempt.to_dict().items() if name not in ("number", "output")}
    pushes = update.setdefault("$push", {})
    pushes["history"] = row
    if attempt.output is not None and keep_outputs > 0:
        kept = {"attempt": attempt.attempt, "ended_at": attempt.ended_at, "output": attempt.output}
        pushes["outputs"] = {"$each": [kept], "$slice": -keep_outputs}


def history_of(doc: dict[str, Any] | None) -> list[Attempt]:
    """A job document's history, numbered, each row with its output if it still has one."""
    if doc is None:
        return []
    outputs = {(item["attempt"], item["ended_at"]): item["output"] for item in doc.get("outputs") or ()}
    attempts = []
    for number, row in enumerate(doc.get("history") or (), start=1):
        fields = {name: value for name, value in row.items() if name in Attempt.__dataclass_fields__}
        output = outputs.get((row.get("attempt"), row.get("ended_at")))
        attempts.append(Attempt(**{**fields, "number": number, "output": output}))
    return attempts


def doc_event(doc: dict[str, Any]) -> Event:
    return Event(
        doc["kind"], doc["at"], doc.get("job_id"), doc.get("queue"), doc.get("state"), doc.get("data") or {}, doc["_id"]
    )


class MongoLog:
    """Publishing and reading the event log; needs ``_jobs``, ``_events`` and ``_counters``."""

    _jobs: Any
    _events: Any
    _counters: Any

    def _reserve(self, count: int) -> int:
        """Reserve ``count`` sequence numbers; returns the first."""
        from pymongo import ReturnDocument

        doc = self._counters.find_one_and_update(
            {"_id": EVENT_COUNTER}, {"$inc": {"seq": count}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(doc["seq"]) - count + 1

    def _insert_events(self, rows: list[dict[str, Any]]) -> None:
        """Insert numbered events; one already there (same ``eid``) is skipped, its number left unused."""
        import pymongo.errors as perr

        if not rows:
            return
        first = self._reserve(len(rows))
        for offset, row in enumerate(rows):
            row["_id"] = first + offset
        try:
            self._events.insert_many(rows, ordered=False)
        except perr.BulkWriteError as exc:
            if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", ())):
                raise
            if not exc.details.get("writeErrors"):
                raise

    def append_events(self, events: Sequence[Event]) -> None:
        """Events of no job (workers): published directly, after their registry write."""
        rows = []
        for event in events:
            row = outbox_entry(event)
            if event.job_id is not None:
                row["job_id"] = event.job_id
            rows.append(row)
        self._insert_events(rows)

    def publish(self, job_ids: list[Any]) -> int:
        """Publish the outboxes of these jobs (see the module); returns how many events were new."""
        from queuectl.store.mongo.batches import STAGING

        docs = list(
            self._jobs.find(
                {"_id": {"$in": job_ids}, "outbox_at": {"$exists": True}, "state": {"$ne": STAGING}},
                {"outbox": 1, "queue": 1},
            )
        )
        entries = [(doc, entry) for doc in docs for entry in doc.get("outbox") or ()]
        if entries:
            seen = {
                row["eid"] for row in self._events.find({"eid": {"$in": [e["eid"] for _, e in entries]}}, {"eid": 1})
            }
            rows = [
                {**entry, "job_id": doc["_id"], "queue": entry.get("queue", doc.get("queue"))}
                for doc, entry in entries
                if entry["eid"] not in seen
            ]
            self._insert_events(rows)
        else:
            rows = []
        for doc in docs:
            mine = [entry["eid"] for entry in doc.get("outbox") or ()]
            cleared = self._jobs.update_one(
                {"_id": doc["_id"], "outbox": {"$size": len(mine)}}, {"$unset": {"outbox": "", "outbox_at": ""}}
            )
            if not cleared.matched_count and mine:  # more were pushed meanwhile: take out only ours
                self._jobs.update_one({"_id": doc["_id"]}, {"$pull": {"outbox": {"eid": {"$in": mine}}}})
        return len(rows)

    def publish_due(self, before: float, pages: int = 4) -> int:
        """Publish what writers left unpublished (they died, or lost the server) before ``before``."""
        from queuectl.store.mongo.batches import STAGING

        published = 0
        for _ in range(pages):
            cursor = self._jobs.find({"outbox_at": {"$lte": before}, "state": {"$ne": STAGING}}, {"_id": 1}).limit(
                PUBLISH_PAGE
            )
            ids = [doc["_id"] for doc in cursor]
            if not ids:
                break
            published += self.publish(ids)
            if len(ids) < PUBLISH_PAGE:
                break
        return published

    @_translate_errors
    def read_events(
        self,
        after: int = 0,
        limit: int = 1000,
        job_id: str | None = None,
        queue: str | None = None,
        since: float | None = None,
        newest: bool = False,
    ) -> list[Event]:
        query: dict[str, Any] = {"_id": {"$gt": after}}
        if job_id is not None:
            query["job_id"] = job_id
        if queue is not None:
            query["queue"] = queue
        if since is not None:
            query["at"] = {"$gte": since}
        cursor = self._events.find(query).sort("_id", -1 if newest else 1).limit(limit)
        found = [doc_event(doc) for doc in cursor]
        return found[::-1] if newest else found

    @_translate_errors
    def purge_events(self, before: float, limit: int) -> int:
        ids = [doc["_id"] for doc in self._events.find({"at": {"$lt": before}}, {"_id": 1}).sort("at", 1).limit(limit)]
        if not ids:
            return 0
        return int(self._events.delete_many({"_id": {"$in": ids}}).deleted_count)

    @_translate_errors
    def attempts(self, job_id: str) -> list[Attempt]:
        return history_of(self._jobs.find_one({"_id": job_id}, {"history": 1, "outputs": 1}))
