"""MongoDB backend: one queue shared by workers on many hosts; a claim is one ``find_one_and_update``.

pymongo is imported only here, so the SQLite path never pays for it. Tests drive this class with
mongomock (``MongoStore(client)``), and a real server when ``QUEUECTL_TEST_MONGODB_URL`` is set.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable

from queuectl.core.defaults import MONGO_CONNECT_TIMEOUT_MS as CONNECT_TIMEOUT_MS
from queuectl.core.defaults import MONGO_INSERT_BATCH as BATCH
from queuectl.core.errors import DuplicateJobId, StoreUnavailable, UniqueKeyTaken
from queuectl.core.lifecycle import CLAIMABLE, HOOK_DUE, KEY_HOLDING, WhenHooked, is_due
from queuectl.core.models import COMPLETED, DEAD, FAILED, PROCESSING, STATES, WAITING, Job, Lease
from queuectl.store.base import Store, Waker
from queuectl.store.mongo.docs import doc_job, fence, job_doc, supports_pipeline_updates
from queuectl.store.mongo.errors import first_line
from queuectl.store.mongo.errors import translate_errors as _translate_errors
from queuectl.store.mongo.registry import MongoRegistry

STAGING = "enqueuing"  # a bulk insert's jobs stay invisible to claims until the whole file is in


class MongoStore(MongoRegistry, Store):
    """Jobs, schedules, config, queues and workers as collections of one database.

    No multi-document transactions: a unit of work groups nothing, and each primitive is one
    atomic single-document update, except that a finished job's hook is marked due by a second
    write right after its outcome (a crash between the two loses that hook: issue 12).
    """

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
        self._staging_states: dict[str, str] = {}  # the jobs of an insert_jobs in progress
        self._collections = {
            "schedules": self._schedules,
            "queues": self._queues,
            "config": self._config,
            "workers": self._workers,
            "tokens": db["tokens"],
        }
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
            print(
                f"queuectl: warning: MongoDB at {redact_url(url)} is reached without TLS; add tls=true to the URL",
                file=sys.stderr,
            )
        client: Any = pymongo.MongoClient(
            url,
            serverSelectionTimeoutMS=CONNECT_TIMEOUT_MS,
            connectTimeoutMS=CONNECT_TIMEOUT_MS,
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
    def insert_jobs(self, jobs: Iterable[Job]) -> int:
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
                details = (exc.details.get("writeErrors") or [{}])[0]  # [] on a write-concern error
                if details.get("code") == 11000:
                    raise self._insert_conflict(details.get("op", {})) from None
                raise
            staged = True
            buffer.clear()

        self._staging_states = staging = {}  # job_states, asked while the iterable runs, sees these
        try:
            for job in jobs:
                staging[job.id] = job.state
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
                    {"batch": token}, [{"$set": {"state": "$final_state"}}, {"$unset": ["batch", "final_state"]}]
                ) if supports_pipeline_updates(self._jobs) else self._publish_slow(token)
        except BaseException:
            if staged or count:
                self._jobs.delete_many({"batch": token})  # what is still staged: nothing half-visible
            raise
        finally:
            self._staging_states = {}
        return count

    @_translate_errors
    def insert_job(self, job: Job) -> None:
        """One job, one ``insert_one``: no staging, so no second write a crash could cut off."""
        import pymongo.errors as perr

        doc = job_doc(job)
        try:
            self._jobs.insert_one(doc)
        except perr.DuplicateKeyError:
            raise self._insert_conflict(doc) from None

    def _insert_conflict(self, doc: dict[str, Any]) -> Exception:
        if doc.get("active_key") is not None and self._jobs.find_one({"_id": doc.get("_id")}) is None:
            holder = self._jobs.find_one({"active_key": doc["active_key"]}, {"state": 1})
            return UniqueKeyTaken(doc["active_key"], (holder["_id"], holder["state"]) if holder else None)
        return DuplicateJobId(doc.get("_id", "?"))

    def _publish_slow(self, token: str) -> None:
        """For servers (or mongomock) without update pipelines: one update per distinct state."""
        for state in self._jobs.distinct("final_state", {"batch": token}):
            self._jobs.update_many(
                {"batch": token, "final_state": state},
                {"$set": {"state": state}, "$unset": {"batch": "", "final_state": ""}},
            )

    @_translate_errors
    def claim(self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1) -> list[Job]:
        from pymongo import ReturnDocument

        self._jobs.update_many(  # the jobs whose time has come join the claimable ones
            {"ready": False, "run_at": {"$lte": now}, "state": {"$in": list(CLAIMABLE)}}, {"$set": {"ready": True}}
        )
        paused = {doc["_id"] for doc in self._queues.find({"paused": True}, {"_id": 1})}
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
                    {
                        "$set": {
                            "state": PROCESSING,
                            "locked_by": worker_id,
                            "lease_expires_at": now + lease,
                            "started_at": now,
                            "updated_at": now,
                        },
                        "$inc": {"attempts": 1},
                    },
                    sort=[("priority", -1), ("created_at", 1)],
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    break
                claimed.append(doc_job(doc))
        return claimed

    @_translate_errors
    def update_job(
        self,
        job_id: str,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...] | None = None,
        lease: Lease | None = None,
        expired_before: float | None = None,
        hook_state: str | None = None,
    ) -> bool:
        import pymongo.errors as perr

        query: dict[str, Any] = fence(lease) if lease is not None else {"_id": job_id}
        if states:
            query["state"] = {"$in": list(states)}
        if expired_before is not None:
            query["lease_expires_at"] = {"$lte": expired_before}
        if hook_state is not None:
            query["hook_state"] = hook_state
        plain = {name: value for name, value in changes.items() if not isinstance(value, WhenHooked)}
        hooked = {name: value.value for name, value in changes.items() if isinstance(value, WhenHooked)}
        update: dict[str, Any] = {"$set": plain}
        state = changes.get("state")
        if state is not None:
            plain["ready"] = is_due(changes)
            if state not in KEY_HOLDING:
                update["$unset"] = {"active_key": ""}
            elif lease is None and (states is None or any(s not in KEY_HOLDING for s in states)):
                current = self._jobs.find_one({"_id": job_id}, {"unique_key": 1})  # the key is taken again
                if current is not None and current.get("unique_key") is not None:
                    plain["active_key"] = current["unique_key"]
        try:
            written = self._jobs.update_one(query, update).matched_count == 1
        except perr.DuplicateKeyError:
            raise UniqueKeyTaken(plain.get("active_key")) from None
        if written and hooked:  # a second write: see the store's docstring for what repairs a gap
            self._jobs.update_one({"_id": job_id, "on_finish": {"$ne": None}}, {"$set": hooked})
        return written

    @_translate_errors
    def update_jobs(self, changes: dict[str, Any], *, states: tuple[str, ...]) -> int:
        count = 0
        for doc in self._jobs.find({"state": {"$in": list(states)}}, {"_id": 1}):
            count += self.update_job(doc["_id"], changes, states=states)
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

    # --- jobs: reading ----------------------------------------------------------------------

    @_translate_errors
    def get(self, job_id: str) -> Job | None:
        doc = self._jobs.find_one({"_id": job_id, "state": {"$ne": STAGING}})
        return doc_job(doc) if doc else None

    @_translate_errors
    def list_jobs(
        self, state: str | None = None, queue: str | None = None, limit: int = 50, before: float | None = None
    ) -> list[Job]:
        query: dict[str, Any] = {"state": {"$ne": STAGING}}
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
        if missing:
            docs = self._jobs.find({"_id": {"$in": missing}}, {"state": 1, "final_state": 1})
            found.update({doc["_id"]: doc.get("final_state") or doc["state"] for doc in docs})
        return found

    @_translate_errors
    def waiting_children(self, parent_id: str) -> list[Job]:
        docs = self._jobs.find({"state": WAITING, "$or": [{"after": parent_id}, {"on_failure_of": parent_id}]})
        return [doc_job(doc) for doc in docs]

    @_translate_errors
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        cursor = self._jobs.find({"state": PROCESSING, "lease_expires_at": {"$lt": now}}).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def hooks_due(self, limit: int = 1) -> list[Job]:
        cursor = self._jobs.find({"hook_state": HOOK_DUE}).sort("updated_at", 1).limit(limit)
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
    def changed_since(self, since: float, limit: int = 100) -> list[Job]:
        query = {"state": {"$in": list(STATES)}, "updated_at": {"$gte": since}}  # the `updated` index
        cursor = self._jobs.find(query).sort([("updated_at", 1), ("_id", 1)]).limit(limit)
        return [doc_job(doc) for doc in cursor]

    @_translate_errors
    def duration_totals(self) -> tuple[int, float]:
        pipeline = [
            {"$match": {"state": COMPLETED, "duration": {"$ne": None}}},
            {"$group": {"_id": None, "n": {"$sum": 1}, "total": {"$sum": "$duration"}}},
        ]
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
