"""Counters per (queue, state) and the durations of completed jobs on MongoDB, without transactions.

The outbox rule again: a write that changes a job's state, queue or duration also stamps the
document with a fresh ``cdirty`` token, in the same single-document update (free on the hot
path). What the counters already hold for a job is on the job itself: ``cs`` (the ``[queue,
state, duration]`` counted, absent: not counted) and ``cv`` (how many times it was counted).

- A read (:meth:`MongoCounts._tally`) sums one base document, the delta documents not folded
  into it yet, and the difference ``now - counted`` of each job still marked: what changed
  since the last repair pass, never every job.
- The repair pass brings marked jobs into the counters (:meth:`sync_counts`): the delta of job
  J counted for the k-th time is inserted under the id ``J:k`` (a second insert of it is a
  duplicate, so a retry or a second worker never counts it twice), then the job's ``cs``/``cv``
  move on (guarded on ``cv == k``), and the mark is cleared only if no write stamped a new one.
  A crash between any two steps leaves the job marked, and the next pass finishes it.
- Deltas are folded into the base (:meth:`fold_counts`) by one atomic update that also lists
  their ids in the base (so a fold is never applied twice), then deleted, then unlisted. A
  delta is folded only once its job counted past it (or is gone), so it cannot be inserted again.
- A purge first writes each job's ``J:k`` delta to "gone", then deletes the job (still at
  ``cv == k``); a job left behind by a crash is marked, and a later pass counts it back in.
"""

from __future__ import annotations

import os
from typing import Any

from queuectl.core.models import COMPLETED, STAGED

DIRTY = "cdirty"
UNCOUNTED = ("staging", STAGED)  # a bulk insert not yet published (mongo.batches.STAGING) is invisible
BASE = "jobs"
SYNC_PAGE = 500  # marked jobs one repair pass counts
FOLD_PAGE = 1000  # deltas one repair pass folds
_SEEN = {"queue": 1, "state": 1, "duration": 1, "cs": 1, "cv": 1, DIRTY: 1}


def mark() -> str:
    """A fresh ``cdirty`` token, for a write that changes what a job counts as."""
    return os.urandom(6).hex()


def counted_as(doc: dict[str, Any]) -> list[Any] | None:
    """``[queue, state, duration]`` a job document counts as now (None: not counted)."""
    if doc.get("state") in UNCOUNTED:
        return None
    return [doc.get("queue"), doc.get("state"), doc.get("duration")]


def _at(version: int) -> Any:
    """The filter of a job counted ``version`` times (a job never counted has no ``cv``)."""
    return version if version else {"$exists": False}


def _key(queue: str) -> str:
    return queue.encode().hex()  # a field name no queue name can break (dots, dollars)


class MongoCounts:
    """Needs ``_jobs``, ``_job_counts`` (the base document) and ``_count_deltas``."""

    _jobs: Any
    _job_counts: Any
    _count_deltas: Any

    def _tally(self) -> dict[tuple[str, str], list[float]]:
        """``{(queue, state): [jobs, timed, seconds]}`` as the counters, deltas and marks say."""
        totals: dict[tuple[str, str], list[float]] = {}

        def add(snapshot: list[Any] | None, sign: int) -> None:
            if snapshot is None:
                return
            queue, state, duration = snapshot
            row = totals.setdefault((queue, state), [0, 0, 0.0])
            row[0] += sign
            if duration is not None:
                row[1] += sign
                row[2] += sign * duration

        base = self._job_counts.find_one({"_id": BASE}) or {}
        folded = set(base.get("folded") or ())
        for key, states in (base.get("c") or {}).items():
            queue = bytes.fromhex(key).decode()
            for state, (n, timed, seconds) in states.items():
                row = totals.setdefault((queue, state), [0, 0, 0.0])
                row[0], row[1], row[2] = row[0] + n, row[1] + timed, row[2] + seconds
        deltas = {delta["_id"]: delta for delta in self._count_deltas.find()}
        for delta in deltas.values():
            if delta["_id"] not in folded:
                add(delta.get("from"), -1)
                add(delta.get("to"), 1)
        for doc in self._jobs.find({DIRTY: {"$exists": True}}, _SEEN):
            counted = doc.get("cs")
            pending = deltas.get(f"{doc['_id']}:{doc.get('cv', 0)}")
            if pending is not None:  # inserted, the job not moved on yet: the delta counts it
                counted = pending.get("to")
            now = counted_as(doc)
            if now != counted:
                add(counted, -1)
                add(now, 1)
        return totals

    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for (queue, state), (n, _, _) in sorted(self._tally().items()):
            if n:
                result.setdefault(queue, {})[state] = int(n)
        return result

    def duration_totals(self) -> tuple[int, float]:
        count, total = 0, 0.0
        for (_, state), (_, timed, seconds) in self._tally().items():
            if state == COMPLETED and timed:
                count, total = count + int(timed), total + float(seconds)
        return count, total

    # --- the repair pass ----------------------------------------------------------------------

    def sync_counts(self, limit: int = SYNC_PAGE) -> int:
        """Count marked jobs into the deltas; returns how many jobs it looked at."""
        docs = list(self._jobs.find({DIRTY: {"$exists": True}}, _SEEN).limit(limit))
        for doc in docs:
            self._sync_one(doc)
        return len(docs)

    def _sync_one(self, doc: dict[str, Any] | None) -> None:
        import pymongo.errors as perr

        for _ in range(5):  # a job changing under our feet: it stays marked for the next pass
            if doc is None:
                return
            version, counted, now = doc.get("cv", 0), doc.get("cs"), counted_as(doc)
            if now == counted:
                self._jobs.update_one(
                    {"_id": doc["_id"], "cv": _at(version), DIRTY: doc[DIRTY]}, {"$unset": {DIRTY: ""}}
                )
                return
            delta_id = f"{doc['_id']}:{version}"
            try:
                self._count_deltas.insert_one(
                    {"_id": delta_id, "job": doc["_id"], "n": version, "from": counted, "to": now}
                )
            except perr.DuplicateKeyError:  # counted already (a retry, another worker, a purge)
                found = self._count_deltas.find_one({"_id": delta_id})
                if found is None:
                    return  # folded: the job moved on past it meanwhile
                now = found.get("to")
            self._jobs.update_one({"_id": doc["_id"], "cv": _at(version)}, {"$set": {"cs": now, "cv": version + 1}})
            doc = self._jobs.find_one({"_id": doc["_id"]}, _SEEN)

    def fold_counts(self, limit: int = FOLD_PAGE) -> int:
        """Fold deltas whose jobs counted past them into the base; returns how many."""
        deltas = list(self._count_deltas.find().limit(limit))
        if not deltas:
            return 0
        jobs = list({delta["job"] for delta in deltas})
        versions = {doc["_id"]: doc.get("cv", 0) for doc in self._jobs.find({"_id": {"$in": jobs}}, {"cv": 1})}
        ready = [d for d in deltas if d["job"] not in versions or versions[d["job"]] > d["n"]]
        if not ready:
            return 0
        self._job_counts.update_one({"_id": BASE}, {"$setOnInsert": {"folded": []}}, upsert=True)
        folded = set((self._job_counts.find_one({"_id": BASE}) or {}).get("folded") or ())
        todo = [delta for delta in ready if delta["_id"] not in folded]
        if todo:
            inc: dict[str, float] = {}
            for delta in todo:
                for snapshot, sign in ((delta.get("from"), -1), (delta.get("to"), 1)):
                    if snapshot is None:
                        continue
                    queue, state, duration = snapshot
                    path = f"c.{_key(queue)}.{state}"
                    inc[f"{path}.0"] = inc.get(f"{path}.0", 0) + sign
                    inc[f"{path}.1"] = inc.get(f"{path}.1", 0) + (sign if duration is not None else 0)
                    inc[f"{path}.2"] = inc.get(f"{path}.2", 0.0) + (sign * duration if duration is not None else 0.0)
            ids = [delta["_id"] for delta in todo]
            self._ensure_rows(inc)
            applied = self._job_counts.update_one(
                {"_id": BASE, "folded": {"$nin": ids}}, {"$inc": inc, "$push": {"folded": {"$each": ids}}}
            )
            if not applied.matched_count:  # another worker folded some of them: the next pass sees the rest
                return 0
        done = [delta["_id"] for delta in ready]
        self._count_deltas.delete_many({"_id": {"$in": done}})
        self._job_counts.update_one({"_id": BASE}, {"$pullAll": {"folded": done}})
        return len(done)

    def _ensure_rows(self, inc: dict[str, float]) -> None:
        """Every (queue, state) an ``$inc`` names exists as ``[n, timed, seconds]`` first ($inc
        on an array index needs the array)."""
        base = self._job_counts.find_one({"_id": BASE}) or {}
        have = {(key, state) for key, states in (base.get("c") or {}).items() for state in states}
        missing = {tuple(path.split(".")[1:3]) for path in inc} - have
        for key, state in missing:
            self._job_counts.update_one(
                {"_id": BASE, f"c.{key}.{state}": {"$exists": False}}, {"$set": {f"c.{key}.{state}": [0, 0, 0.0]}}
            )

    # --- purging ----------------------------------------------------------------------------

    def _count_out(self, query: dict[str, Any]) -> dict[str, Any]:
        """Before deleting what ``query`` matches: each job's delta to "gone" is written, and
        the query narrowed to the jobs still at that count (see the module)."""
        import pymongo.errors as perr

        docs = list(self._jobs.find(query, _SEEN))
        if not docs:
            return query
        token = mark()  # a job not deleted after all (a crash, a change) is counted back in
        self._jobs.update_many({"_id": {"$in": [doc["_id"] for doc in docs]}}, {"$set": {DIRTY: token}})
        deltas = [
            {"_id": f"{doc['_id']}:{doc.get('cv', 0)}", "job": doc["_id"], "n": doc.get("cv", 0), "from": doc.get("cs")}
            for doc in docs
        ]
        refused: set[str] = set()
        try:
            self._count_deltas.insert_many([{**delta, "to": None} for delta in deltas], ordered=False)
        except perr.BulkWriteError as exc:
            refused = {deltas[error["index"]]["job"] for error in exc.details.get("writeErrors", [])}
        keep = [doc for doc in docs if doc["_id"] not in refused]  # being counted right now: next time
        if not keep:
            return {"_id": None}
        return {"$and": [query, {"$or": [{"_id": doc["_id"], "cv": _at(doc.get("cv", 0))} for doc in keep]}]}
