"""MongoDB backend: one queue shared by workers on many hosts; a claim is one ``find_one_and_update``.

pymongo is imported only here, so the SQLite path never pays for it. Tests drive this class with
mongomock (``MongoStore(client)``), and a real server when ``QUEUECTL_TEST_MONGODB_URL`` is set.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable

from queuectl.core.errors import Conflict, NotFound, StoreUnavailable
from queuectl.core.models import (
    CANCELLED,
    CLAIMABLE,
    COMPLETED,
    DEAD,
    FINISHED,
    HOOK_DONE,
    HOOK_DUE,
    HOOK_FAILED,
    PENDING,
    PROCESSING,
    WAITING,
    Job,
    Lease,
    Outcome,
    dependency_state,
)
from queuectl.store.base import Store, Waker
from queuectl.store.mongo.docs import doc_job, fence, job_doc, supports_pipeline_updates
from queuectl.store.mongo.errors import first_line
from queuectl.store.mongo.errors import translate_errors as _translate_errors
from queuectl.store.mongo.registry import MongoRegistry

CONNECT_TIMEOUT_MS = 5000
BATCH = 1000
STAGING = "enqueuing"  # a bulk insert's jobs stay invisible to claims until the whole file is in

class MongoStore(MongoRegistry, Store):
    """Jobs, config, queues and workers as four collections of one database."""

    def __init__(self, client: Any, db_name: str = "queuectl", url: str = "mongodb://") -> None:
        from queuectl.store import redact_url

        self.url = url
        self.safe_url = redact_url(url)
        self._client = client
        db = client[db_name]
        self._jobs = db["jobs"]
        self._config = db["config"]
        self._queues = db["queues"]
        self._workers = db["workers"]
        self._schedules = db["schedules"]
        self._resettle_from: str | None = None
        self._ensure_indexes()

    @classmethod
    def connect(cls, url: str) -> MongoStore:
        """Connect with short timeouts (a dead server is reported in seconds, not 30)."""
        import sys

        import pymongo
        from pymongo.uri_parser import parse_uri

        from queuectl.store import redact_url

        try:
            parsed = parse_uri(url)
        except Exception as exc:  # pymongo raises InvalidURI, ConfigurationError, ValueError
            from queuectl.core.errors import InvalidInput

            raise InvalidInput(f"invalid MongoDB URL {redact_url(url)}: {first_line(exc)}") from None
        hosts = [host for host, _ in parsed.get("nodelist", [])]
        tls = parsed.get("options", {}).get("tls") or url.startswith("mongodb+srv://")
        if not tls and any(h not in ("localhost", "127.0.0.1", "::1") for h in hosts):
            print(f"queuectl: warning: MongoDB at {redact_url(url)} is reached without TLS; "
                  "add tls=true to the URL", file=sys.stderr)
        client: Any = pymongo.MongoClient(
            url, serverSelectionTimeoutMS=CONNECT_TIMEOUT_MS, connectTimeoutMS=CONNECT_TIMEOUT_MS,
            tz_aware=True,
        )
        try:
            client.admin.command("ping")
        except Exception as exc:
            client.close()
            raise StoreUnavailable(f"cannot reach MongoDB at {redact_url(url)}: {first_line(exc)}") from None
        return cls(client, parsed.get("database") or "queuectl", url)

    @_translate_errors
    def _ensure_indexes(self) -> None:
        # claims walk only due jobs (ready): delayed jobs and pending retries wait in "not_due"
        ready = [("state", 1), ("ready", 1), ("queue", 1), ("priority", -1), ("created_at", 1)]
        self._jobs.create_index(ready, name="claim_queue")
        self._jobs.create_index([("state", 1), ("ready", 1), ("priority", -1), ("created_at", 1)], name="claim_any")
        self._jobs.create_index([("ready", 1), ("run_at", 1)], name="not_due")
        self._jobs.create_index([("state", 1), ("run_at", 1)], name="due")
        self._jobs.create_index([("state", 1), ("lease_expires_at", 1)], name="lease")
        self._jobs.create_index([("state", 1), ("created_at", -1)], name="by_state")
        self._jobs.create_index([("queue", 1), ("created_at", -1)], name="by_queue")
        self._jobs.create_index([("created_at", -1)], name="by_created")
        self._jobs.create_index([("state", 1), ("finished_at", 1)], name="finished")
        self._jobs.create_index([("state", 1), ("updated_at", -1)], name="updated")
        self._jobs.create_index([("batch", 1)], name="batch", sparse=True)
        self._jobs.create_index([("active_key", 1)], name="unique_active", unique=True, sparse=True)
        self._jobs.create_index([("after", 1)], name="after", sparse=True)
        self._jobs.create_index([("on_failure_of", 1)], name="on_failure_of", sparse=True)
        self._jobs.create_index([("hook_state", 1), ("updated_at", 1)], name="hooks", sparse=True)
        self._schedules.create_index([("paused", 1), ("next_fire_at", 1)], name="due")

    # --- jobs: writing ----------------------------------------------------------------------

    @_translate_errors
    def enqueue_many(self, jobs: Iterable[Job]) -> int:
        import pymongo.errors as perr

        token = os.urandom(8).hex()
        buffer: list[dict[str, Any]] = []
        count = 0
        staged = False

        def flush() -> None:
            nonlocal staged
            try:
                self._jobs.insert_many(buffer, ordered=True)
            except perr.BulkWriteError as exc:
                details = exc.details.get("writeErrors", [{}])[0]
                if details.get("code") == 11000:
                    raise self._insert_conflict(details.get("op", {})) from None
                raise
            staged = True
            buffer.clear()

        in_batch: dict[str, str] = {}
        try:
            for job in jobs:
                if job.after or job.on_failure_of:
                    job.state = self._dependency_state(job, in_batch)
                in_batch[job.id] = job.state
                doc = job_doc(job)
                doc["final_state"], doc["state"], doc["batch"] = doc["state"], STAGING, token
                buffer.append(doc)
                count += 1
                if len(buffer) >= BATCH:
                    flush()
            if buffer:
                flush()
            if count:
                # every job becomes claimable at once; a staged job keeps its intended state
                self._jobs.update_many(
                    {"batch": token}, [{"$set": {"state": "$final_state"}},
                                       {"$unset": ["batch", "final_state"]}]
                ) if supports_pipeline_updates(self._jobs) else self._publish_slow(token)
        except BaseException:
            if staged or count:
                self._jobs.delete_many({"batch": token})  # what is still staged: nothing half-visible
            raise
        if count:
            self._recheck_waiting([job_id for job_id, state in in_batch.items() if state == WAITING])
            self.notify()
        return count

    def _dependency_state(self, job: Job, in_batch: dict[str, str]) -> str:
        parents = [*job.after, *([job.on_failure_of] if job.on_failure_of else [])]
        states = {doc["_id"]: doc.get("final_state") or doc["state"]
                  for doc in self._jobs.find({"_id": {"$in": parents}}, {"state": 1, "final_state": 1})}
        states.update({p: in_batch[p] for p in parents if p in in_batch})
        failure = (job.on_failure_of, states.get(job.on_failure_of)) if job.on_failure_of else None
        return dependency_state(job.id, {p: states.get(p) for p in job.after}, failure)

    def _insert_conflict(self, doc: dict[str, Any]) -> Conflict:
        if doc.get("active_key") is not None and self._jobs.find_one({"_id": doc.get("_id")}) is None:
            holder = self._jobs.find_one({"active_key": doc["active_key"]}, {"state": 1})
            held = f"job {holder['_id']} ({holder['state']})" if holder else "another active job"
            return Conflict(f"unique key {doc['active_key']!r} is taken by {held}; "
                            "enqueue again once it has finished")
        return Conflict(f"a job with id {doc.get('_id', '?')!r} already exists")

    def _settle(self, job_id: str, state: str, now: float) -> int:
        """Release or cancel (transitively) the jobs waiting on a job that just finished."""
        released = 0
        todo = [(job_id, state)]
        while todo:
            parent, parent_state = todo.pop()
            for child in self._jobs.find({"state": WAITING, "$or": [{"after": parent}, {"on_failure_of": parent}]}):
                kind = "on_failure" if child.get("on_failure_of") == parent else "after"
                if (kind == "after") != (parent_state == COMPLETED):
                    reason = (f"not needed: {parent} completed" if kind == "on_failure"
                              else f"parent job {parent} ended {parent_state}")
                    if self._end(child["_id"], {"state": WAITING}, CANCELLED, now, reason):
                        todo.append((child["_id"], CANCELLED))
                    continue
                released += self._release_if_ready(child, now)
        return released

    def _release_if_ready(self, child: dict[str, Any], now: float) -> int:
        """Make a waiting job pending once its parents allow it. A parent that is gone was purged,
        which only happens to a finished job: it counts as having ended the way the child needed."""
        after = child.get("after") or []
        failure_parent = child.get("on_failure_of")
        parents = [*after, *([failure_parent] if failure_parent else [])]
        states = {d["_id"]: d["state"] for d in self._jobs.find({"_id": {"$in": parents}}, {"state": 1})}
        ready = all(states.get(p, COMPLETED) == COMPLETED for p in after) and (
            not failure_parent or states.get(failure_parent, DEAD) in (DEAD, CANCELLED))
        if not ready:
            return 0
        return self._jobs.update_one(
            {"_id": child["_id"], "state": WAITING},
            {"$set": {"state": PENDING, "updated_at": now, "ready": False}, "$max": {"run_at": now}},
        ).modified_count

    def _end(self, job_id: str, match: dict[str, Any], state: str, now: float, error: str | None) -> bool:
        """Move a job to a finished state: frees its unique key and makes its hook due."""
        update: dict[str, Any] = {"state": state, "finished_at": now, "updated_at": now,
                                  "locked_by": None, "lease_expires_at": None}
        if error is not None:
            update["last_error"] = error
        done = self._jobs.update_one({"_id": job_id, **match}, {"$set": update, "$unset": {"active_key": ""}})
        if done.matched_count:
            self._jobs.update_one({"_id": job_id, "on_finish": {"$ne": None}}, {"$set": {"hook_state": HOOK_DUE}})
        return done.matched_count == 1

    def _recheck_waiting(self, job_ids: list[str]) -> None:
        """A parent may have finished while its child was staged (invisible to ``_settle``):
        settle such children now, as if their parents had just finished."""
        import time

        now = time.time()
        for child in self._jobs.find({"_id": {"$in": job_ids}, "state": WAITING}):
            parents = [*(child.get("after") or []), *([child["on_failure_of"]] if child.get("on_failure_of") else [])]
            for parent in self._jobs.find({"_id": {"$in": parents}, "state": {"$in": list(FINISHED)}}):
                self._settle(parent["_id"], parent["state"], now)

    @_translate_errors
    def resettle_waiting(self, limit: int = 1000) -> None:
        # page through the waiting jobs across calls, so a long list is covered in time
        query: dict[str, Any] = {"state": WAITING}
        if self._resettle_from is not None:
            query["_id"] = {"$gt": self._resettle_from}
        waiting = [doc["_id"] for doc in self._jobs.find(query, {"_id": 1}).sort("_id", 1).limit(limit)]
        self._resettle_from = waiting[-1] if len(waiting) == limit else None
        if waiting:
            self._recheck_waiting(waiting)

    def _publish_slow(self, token: str) -> None:
        """For servers (or mongomock) without update pipelines: one update per distinct state."""
        for state in self._jobs.distinct("final_state", {"batch": token}):
            self._jobs.update_many(
                {"batch": token, "final_state": state},
                {"$set": {"state": state}, "$unset": {"batch": "", "final_state": ""}},
            )

    @_translate_errors
    def claim(
        self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1
    ) -> list[Job]:
        from pymongo import ReturnDocument

        self._jobs.update_many(  # the jobs whose time has come join the claimable ones
            {"ready": False, "run_at": {"$lte": now}, "state": {"$in": list(CLAIMABLE)}}, {"$set": {"ready": True}}
        )
        paused = self.paused_queues()
        claimed: list[Job] = []
        for queue in queues if queues else [None]:
            if queue in paused:
                continue
            query: dict[str, Any] = {"state": {"$in": list(CLAIMABLE)}, "ready": True, "run_at": {"$lte": now}}
            if queue is not None:
                query["queue"] = queue
            elif paused:
                query["queue"] = {"$nin": sorted(paused)}
            while len(claimed) < limit:
                doc = self._jobs.find_one_and_update(
                    query,
                    {"$set": {"state": PROCESSING, "locked_by": worker_id,
                              "lease_expires_at": now + lease, "started_at": now, "updated_at": now},
                     "$inc": {"attempts": 1}},
                    sort=[("priority", -1), ("created_at", 1)],
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    break
                claimed.append(doc_job(doc))
        return claimed

    @_translate_errors
    def heartbeat(
        self, worker_id: str, beats: list[tuple[Lease, str | None]], now: float, lease: float
    ) -> set[str]:
        lost: set[str] = set()
        for held, output in beats:
            update: dict[str, Any] = {"lease_expires_at": now + lease}
            if output is not None:
                update["output"] = output
            result = self._jobs.update_one(fence(held), {"$set": update})
            if result.matched_count == 0:
                lost.add(held.job_id)
        return lost

    @_translate_errors
    def finish(self, lease: Lease, outcome: Outcome, expired_before: float | None = None) -> bool:
        query = fence(lease)
        if expired_before is not None:
            query["lease_expires_at"] = {"$lte": expired_before}
        update: dict[str, Any] = {
            "state": outcome.state, "exit_code": outcome.exit_code, "last_error": outcome.last_error,
            "finished_at": outcome.at if outcome.state in FINISHED else None,
            "duration": outcome.duration, "updated_at": outcome.at, "locked_by": None,
            "lease_expires_at": None,
            "ready": outcome.state in CLAIMABLE and (outcome.run_at is None or outcome.run_at <= outcome.at),
        }
        for name in ("run_at", "output", "attempts"):
            value = getattr(outcome, name)
            if value is not None:
                update[name] = value
        final = outcome.state in FINISHED
        changes: dict[str, Any] = {"$set": update}
        if final:
            changes["$unset"] = {"active_key": ""}
        written = self._jobs.update_one(query, changes).matched_count == 1
        if written and final:
            self._jobs.update_one({"_id": lease.job_id, "on_finish": {"$ne": None}},
                                  {"$set": {"hook_state": HOOK_DUE}})
            if self._settle(lease.job_id, outcome.state, outcome.at):
                self.notify()
        return written

    @_translate_errors
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        cursor = self._jobs.find({"state": PROCESSING, "lease_expires_at": {"$lt": now}}).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def cancel(self, job_id: str, now: float) -> Job:
        from pymongo import ReturnDocument

        doc = self._jobs.find_one_and_update(
            {"_id": job_id, "state": {"$in": [PENDING, WAITING, "failed", PROCESSING]}},
            {"$set": {"state": CANCELLED, "finished_at": now, "updated_at": now,
                      "locked_by": None, "lease_expires_at": None}, "$unset": {"active_key": ""}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            existing = self._jobs.find_one({"_id": job_id}, {"state": 1})
            if existing is None:
                raise NotFound(f"no job with id {job_id!r}")
            raise Conflict(f"job {job_id} already finished ({existing['state']}); nothing to cancel")
        if doc.get("on_finish"):
            self._jobs.update_one({"_id": job_id}, {"$set": {"hook_state": HOOK_DUE}})
            doc["hook_state"] = HOOK_DUE
        if self._settle(job_id, CANCELLED, now):
            self.notify()
        return doc_job(doc)

    @_translate_errors
    def retry_dead(self, job_id: str | None, now: float) -> int:
        import pymongo.errors as perr

        reset = {"state": PENDING, "attempts": 0, "run_at": now, "updated_at": now, "ready": True,
                 "finished_at": None, "locked_by": None, "lease_expires_at": None}
        query: dict[str, Any] = {"state": DEAD}
        if job_id is not None:
            query["_id"] = job_id
        count = 0
        for doc in self._jobs.find(query, {"unique_key": 1}):
            update = dict(reset)
            if doc.get("unique_key") is not None:
                update["active_key"] = doc["unique_key"]  # the key is taken again
            try:
                count += self._jobs.update_one({"_id": doc["_id"], "state": DEAD}, {"$set": update}).modified_count
            except perr.DuplicateKeyError:
                raise Conflict(f"job {doc['_id']}'s unique key is taken by an active job; "
                               "retry it once that one has finished") from None
        if count == 0 and job_id is not None:
            existing = self._jobs.find_one({"_id": job_id}, {"state": 1})
            if existing is None:
                raise NotFound(f"no job with id {job_id!r}")
            raise Conflict(f"job {job_id} is {existing['state']}, not in the dead letter queue")
        if count:
            self.notify()
        return count

    @_translate_errors
    def purge(self, states: list[str], finished_before: float | None = None, limit: int | None = None) -> int:
        query = self._purge_query(states, finished_before)
        if limit is not None:
            ids = [doc["_id"] for doc in self._jobs.find(query, {"_id": 1}).limit(limit)]
            query = {**query, "_id": {"$in": ids}}  # re-checked: a job retried meanwhile stays
        return self._jobs.delete_many(query).deleted_count

    @_translate_errors
    def count_purgeable(self, states: list[str], finished_before: float | None = None) -> int:
        return self._jobs.count_documents(self._purge_query(states, finished_before))

    @staticmethod
    def _purge_query(states: list[str], finished_before: float | None) -> dict[str, Any]:
        query: dict[str, Any] = {"state": {"$in": states}}
        if finished_before is not None:
            query["finished_at"] = {"$lt": finished_before}
        return query

    @_translate_errors
    def claim_hook(self, now: float) -> Job | None:
        from pymongo import ReturnDocument

        doc = self._jobs.find_one_and_update(
            {"hook_state": HOOK_DUE}, {"$set": {"hook_state": "running"}},
            sort=[("updated_at", 1)], return_document=ReturnDocument.AFTER,
        )
        return doc_job(doc) if doc else None

    @_translate_errors
    def finish_hook(self, job_id: str, error: str | None, now: float) -> None:
        self._jobs.update_one({"_id": job_id}, {"$set": {"hook_state": HOOK_FAILED if error else HOOK_DONE,
                                                         "hook_error": error}})

    # --- jobs: reading ----------------------------------------------------------------------

    @_translate_errors
    def get(self, job_id: str) -> Job | None:
        doc = self._jobs.find_one({"_id": job_id, "state": {"$ne": STAGING}})
        return doc_job(doc) if doc else None

    @_translate_errors
    def list_jobs(
        self, state: str | None = None, queue: str | None = None, limit: int = 50
    ) -> list[Job]:
        query: dict[str, Any] = {"state": {"$ne": STAGING}}
        if state:
            query["state"] = state
        if queue:
            query["queue"] = queue
        cursor = self._jobs.find(query).sort("created_at", -1).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        pipeline = [{"$group": {"_id": {"state": "$state", "queue": "$queue"}, "n": {"$sum": 1}}}]
        for row in self._jobs.aggregate(pipeline):
            if row["_id"]["state"] != STAGING:
                result.setdefault(row["_id"]["queue"], {})[row["_id"]["state"]] = row["n"]
        return result

    @_translate_errors
    def throughput(self, since: float, bucket: float = 60.0) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {"completed": {}, "failed": {}}
        for name, states, field in (("completed", ["completed"], "finished_at"),
                                    ("failed", ["failed", DEAD], "updated_at")):
            for state in states:
                cursor = self._jobs.find({"state": state, field: {"$gte": since}}, {field: 1, "_id": 0})
                for doc in cursor:
                    slot = int(doc[field] // bucket)
                    result[name][slot] = result[name].get(slot, 0) + 1
        return result

    @_translate_errors
    def recent_failures(self, limit: int = 5) -> list[Job]:
        cursor = self._jobs.find({"state": {"$in": ["failed", DEAD]}}).sort("updated_at", -1).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def duration_totals(self) -> tuple[int, float]:
        pipeline = [{"$match": {"state": "completed", "duration": {"$ne": None}}},
                    {"$group": {"_id": None, "n": {"$sum": 1}, "total": {"$sum": "$duration"}}}]
        rows = list(self._jobs.aggregate(pipeline))
        return (int(rows[0]["n"]), float(rows[0]["total"])) if rows else (0, 0.0)

    @_translate_errors
    def next_due(self, queues: list[str] | None) -> float | None:
        query: dict[str, Any] = {"state": {"$in": list(CLAIMABLE)}}
        if queues:
            query["queue"] = {"$in": queues}
        doc = self._jobs.find_one(query, {"run_at": 1}, sort=[("run_at", 1)])
        return doc["run_at"] if doc else None

    # --- waking -----------------------------------------------------------------------------

    def waker(self, worker_id: str) -> Waker | None:
        """A change-stream watcher where the server offers one (replica sets); else None: poll."""
        try:
            stream = self._jobs.watch(
                [{"$match": {"operationType": {"$in": ["insert", "update", "replace"]}}}],
                max_await_time_ms=1000,
            )
        except Exception:
            return None
        return _ChangeStreamWaker(stream)

    def close(self) -> None:
        self._client.close()

    def explain_claim(self, queue: str | None, now: float) -> dict[str, Any]:
        """The server's query plan for a claim's search (used to prove index use)."""
        query: dict[str, Any] = {"state": {"$in": list(CLAIMABLE)}, "ready": True, "run_at": {"$lte": now}}
        if queue:
            query["queue"] = queue
        return self._jobs.find(query).sort([("priority", -1), ("created_at", 1)]).limit(1).explain()


class _ChangeStreamWaker:
    """A thread turns change-stream events into bytes on a pipe the worker can select on."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._closed = False
        threading.Thread(target=self._pump, daemon=True, name="queuectl-change-stream").start()

    def _pump(self) -> None:
        try:
            while not self._closed and self._stream.alive:
                if self._stream.try_next() is not None:
                    try:
                        os.write(self._write, b"!")
                    except BlockingIOError:
                        pass
        except Exception:
            pass  # the worker falls back on its poll interval

    def fileno(self) -> int:
        return self._read

    def drain(self) -> bytes:
        received = b""
        try:
            while chunk := os.read(self._read, 4096):
                received += chunk
        except BlockingIOError:
            pass
        return received

    def close(self) -> None:
        self._closed = True
        try:
            self._stream.close()
        except Exception:
            pass
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
