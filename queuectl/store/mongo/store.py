"""MongoDB backend: one queue shared by workers on many hosts; a claim is one ``find_one_and_update``.

pymongo is imported only here, so the SQLite path never pays for it. Tests drive this class with
mongomock (``MongoStore(client)``), and a real server when ``QUEUECTL_TEST_MONGODB_URL`` is set.

The parts: :mod:`.client` (connection options), :mod:`.writes` (lost replies resolved by
reading), :mod:`.batches` (bulk inserts through a commit document), :mod:`.reads`,
:mod:`.indexes`, :mod:`.clock` (the server's time), :mod:`.waker` (change streams),
:mod:`.registry` (the small collections).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from queuectl.core.defaults import MONGO_OUTPUT_BUDGET
from queuectl.core.errors import DuplicateJobId, QueuectlError, UniqueKeyTaken
from queuectl.core.lifecycle import CLAIMABLE, FINISHED, KEY_HOLDING, WhenHooked, is_due
from queuectl.core.lifecycle import events as log_events
from queuectl.core.models import PROCESSING, Attempt, Event, Job, Lease
from queuectl.store.base import Store, Waker
from queuectl.store.mongo import writes
from queuectl.store.mongo.batches import STAGING, MongoBatches
from queuectl.store.mongo.clock import ServerClock
from queuectl.store.mongo.counts import DIRTY, MongoCounts, mark
from queuectl.store.mongo.docs import doc_job, fence, job_doc
from queuectl.store.mongo.errors import translate_errors as _translate_errors
from queuectl.store.mongo.events import PUBLISH_GRACE_S, MongoLog, with_attempt, with_outbox
from queuectl.store.mongo.gates import MongoGates
from queuectl.store.mongo.indexes import JOB_INDEXES, OTHER_INDEXES, ensure_indexes
from queuectl.store.mongo.reads import MongoReads
from queuectl.store.mongo.registry import MongoRegistry

__all__ = ["STAGING", "MongoStore"]

MAX_UNSETTLED = 100  # marked jobs one repair pass settles
PROMOTE_MAX = 1000  # jobs whose time has come that one claim makes claimable (and logs as due)
_PROGRESS = ("progress_done", "progress_total", "progress_message", "progress_at")


class MongoStore(MongoRegistry, MongoBatches, MongoCounts, MongoReads, MongoLog, MongoGates, Store):
    """Jobs, schedules, config, queues, workers and bulk-insert batches as collections of one database.

    No multi-document transactions: a unit of work groups nothing, and each primitive is one
    atomic single-document write. A state change carries the marks of its follow-ups in that
    same write (outbox): a finished job's hook falls due in it, and ``settle_at`` marks its
    dependants as still to settle until :meth:`mark_settled`; any worker's repair pass resumes
    what a crash between steps left.
    """

    output_budget = MONGO_OUTPUT_BUDGET  # a document is at most 16 MiB: outputs share 14 of it

    def __init__(
        self,
        client: Any,
        db_name: str = "queuectl",
        url: str = "mongodb://",
        host_clock: Callable[[], float] = time.time,
        server_clock: Callable[[], float] | None = None,
    ) -> None:
        from queuectl.store import redact_url

        self.url = url
        self.safe_url = redact_url(url)
        self._client = client
        db = client[db_name]
        self._jobs = db["jobs"]
        self._batches = db["batches"]
        self._config = db["config"]
        self._queues = db["queues"]
        self._workers = db["workers"]
        self._schedules = db["schedules"]
        self._events = db["events"]
        self._counters = db["counters"]
        self._job_counts = db["job_counts"]  # counts(): see mongo.counts
        self._count_deltas = db["count_deltas"]
        self._staging_states: dict[str, str] = {}  # the jobs of an insert_jobs in progress
        self._unit_depth = 0
        self._unpublished: list[str] = []  # jobs whose outboxes the open unit publishes at its end
        self._unresolved_claims: list[str] = []  # tokens of claims whose reply was lost
        self._collections = {
            "schedules": self._schedules,
            "queues": self._queues,
            "config": self._config,
            "workers": self._workers,
            # the staged-batch records of lifecycle.batches, which only a transactional store
            # uses (this one stages bulk inserts itself, in "batches"): kept apart, and empty
            "batches": db["staged_batches"],
            "tokens": db["tokens"],
        }
        self._clock = ServerClock(client, host_clock, server_clock)
        self._ensure_indexes()

    @classmethod
    def connect(cls, url: str) -> MongoStore:
        """Connect with the bounds :mod:`.client` explains (majority, short timeouts)."""
        from queuectl.store.mongo.client import open_client

        client, database = open_client(url)
        return cls(client, database, url)

    def now(self) -> float:
        return self._clock.now()

    def _now(self) -> float:
        return self._clock.now()

    @_translate_errors
    def _ensure_indexes(self) -> None:
        ensure_indexes(self._jobs, JOB_INDEXES)
        for name, wanted in OTHER_INDEXES.items():
            ensure_indexes(getattr(self, f"_{name}"), wanted)

    # --- jobs: writing ----------------------------------------------------------------------

    @_translate_errors
    def insert_jobs(self, jobs: Iterable[Job]) -> int:
        count = self._stage_jobs(jobs)
        self._publish_quietly(lambda: self.publish_due(self._now() + PUBLISH_GRACE_S))
        return count

    def _publish_quietly(self, publish: Callable[[], Any]) -> None:
        """Publish right after a write; on failure the outbox keeps the events for the repair pass."""
        import pymongo.errors as perr

        try:
            publish()
        except (perr.PyMongoError, QueuectlError):
            pass

    def _publish_soon(self, job_ids: list[str]) -> None:
        """Publish these jobs' outboxes now, or inside a unit of work once it ends (a busy
        worker's outcome and next claim are published together: fewer round trips)."""
        if self._unit_depth:
            self._unpublished.extend(job_ids)
        else:
            self._publish_quietly(lambda: self.publish(job_ids))

    def unit(self) -> contextlib.AbstractContextManager[None]:
        """Groups nothing (no transactions), but publishes the events its writes left once, at its end."""
        return self._publishing_unit()

    @contextlib.contextmanager
    def _publishing_unit(self) -> Iterator[None]:
        self._unit_depth += 1
        try:
            yield
        finally:
            self._unit_depth -= 1
            if not self._unit_depth and self._unpublished:
                ids, self._unpublished = list(dict.fromkeys(self._unpublished)), []
                self._publish_quietly(lambda: self.publish(ids))

    @_translate_errors
    def insert_job(self, job: Job) -> None:
        """One job, one ``insert_one``: no staging, so no second write a crash could cut off."""
        import pymongo.errors as perr

        doc = job_doc(job)
        try:
            writes.insert_one(self._jobs, doc)
        except perr.DuplicateKeyError:
            raise self._insert_conflict(doc) from None
        self._publish_soon([job.id])

    def _insert_conflict(self, doc: dict[str, Any]) -> Exception:
        if doc.get("active_key") is not None and self._jobs.find_one({"_id": doc.get("_id")}) is None:
            holder = self._jobs.find_one({"active_key": doc["active_key"]}, {"state": 1})
            return UniqueKeyTaken(doc["active_key"], (holder["_id"], holder["state"]) if holder else None)
        return DuplicateJobId(doc.get("_id", "?"))

    @_translate_errors
    def claim(self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1) -> list[Job]:
        """One job per ``find_one_and_update``, each kept the moment it is returned: a failure
        after the first returns what was claimed (the next call meets the error again). A claim
        whose reply was lost is looked up by its token, then or at this worker's next claim."""
        claimed = self._adopt_lost_claims(worker_id, now, lease)
        self._promote_due(now)
        gates = list(
            self._queues.find(
                {"$or": [{"paused": True}, {"max_running": {"$ne": None}}, {"rate_count": {"$ne": None}}]}
            )
        )
        paused = {doc["_id"] for doc in gates if doc.get("paused")}
        limited = {doc["_id"]: int(doc["max_running"]) for doc in gates if doc.get("max_running") is not None}
        rated = {doc["_id"]: doc for doc in gates if doc.get("rate_count") is not None}
        gated = set(limited) | set(rated)
        self._next_slot = None
        order: list[str | None] = list(queues) if queues else [None, *sorted(gated)]
        for queue in order:
            if queue in paused:
                continue
            query: dict[str, Any] = {"ready": True, "state": {"$in": list(CLAIMABLE)}, "run_at": {"$lte": now}}
            if queue is None:
                if paused or gated:
                    query["queue"] = {"$nin": sorted(paused | gated)}
            else:
                query["queue"] = queue
            if queue is None or queue not in gated:
                while len(claimed) < limit:
                    try:
                        job = self._claim_one(query, worker_id, now, lease)
                    except Exception:
                        if claimed:
                            return claimed
                        raise
                    if job is None:
                        break
                    claimed.append(job)
                continue
            try:
                gates_of = (limited.get(queue), rated.get(queue))
                claimed += self._claim_gated(queue, query, gates_of, worker_id, now, lease, limit - len(claimed))
            except Exception:
                if claimed:
                    return claimed
                raise
        if claimed:
            self._publish_soon([job.id for job in claimed])
        return claimed

    def _promote_due(self, now: float) -> None:
        """The jobs whose time has come join the claimable ones, each with its ``due`` event in
        its outbox (one write per job: an event's id is its own). Bounded per claim; the rest
        join at the next one."""
        query = {"ready": False, "run_at": {"$lte": now}, "state": {"$in": list(CLAIMABLE)}}  # the not_due index
        promoted = []
        for doc in self._jobs.find(query, {"state": 1, "queue": 1, "run_at": 1}).sort("run_at", 1).limit(PROMOTE_MAX):
            update: dict[str, Any] = {"$set": {"ready": True}}
            with_outbox(update, [log_events.due(doc["_id"], doc["queue"], doc["state"], doc["run_at"], now)], now)
            if self._jobs.update_one({**query, "_id": doc["_id"]}, update).modified_count:
                promoted.append(doc["_id"])
        if promoted:
            self._publish_soon(promoted)

    def _claim_gated(
        self,
        queue: str,
        query: dict[str, Any],
        gates: tuple[int | None, dict[str, Any] | None],
        worker_id: str,
        now: float,
        lease: float,
        want: int,
    ) -> list[Job]:
        """Claim up to ``want`` jobs of a queue with a limit and/or a rate: a seat and a rate
        place first for each (:mod:`.gates`), given back if no job is there."""
        limit, rate = gates
        claimed: list[Job] = []
        if rate is not None:
            self._trim_rate(queue, float(rate["rate_window"]), now)
        while len(claimed) < want:
            seat = self._take_seat(queue, limit, now) if limit is not None else None
            if limit is not None and seat is None:
                break
            slot = self._take_slot(queue, rate, now) if rate is not None else None
            if rate is not None and slot is None:
                if seat is not None:
                    self._give_back(queue, "seats", seat)
                break
            try:
                job = self._claim_one(query, worker_id, now, lease, seat)
            except Exception:
                if claimed:
                    return claimed
                raise
            if job is None:
                for field, token in (("seats", seat), ("rate_log", slot)):
                    if token is not None:
                        self._give_back(queue, field, token)
                break
            if seat is not None:
                self._bind_seat(queue, seat)
            claimed.append(job)
        return claimed

    def _claim_one(
        self, query: dict[str, Any], worker_id: str, now: float, lease: float, seat: str | None = None
    ) -> Job | None:
        from pymongo import ReturnDocument

        token = writes.new_token()
        held = {"state": PROCESSING, "locked_by": worker_id, "lease_expires_at": now + lease}
        update: dict[str, Any] = {
            "$set": {**held, "started_at": now, "updated_at": now, writes.TOKEN: token, DIRTY: mark()},
            "$unset": {"ready": "", **dict.fromkeys(_PROGRESS, "")},  # a new attempt reports afresh
            "$inc": {"attempts": 1},
        }
        if seat is not None:  # the queue's seat it holds while processing (see .gates)
            update["$set"]["seat"] = seat
        else:
            update["$unset"]["seat"] = ""
        # the claimed event rides in the claim's own write (its attempt is the job's, after $inc)
        with_outbox(update, [Event(log_events.CLAIMED, now, state=PROCESSING, data={"worker": worker_id})], now)
        try:
            doc = self._jobs.find_one_and_update(
                query, update, sort=[("priority", -1), ("created_at", 1)], return_document=ReturnDocument.AFTER
            )
        except Exception as exc:
            if not writes.is_uncertain(exc):
                raise
            self._unresolved_claims.append(token)
            try:
                doc = self._jobs.find_one({"state": PROCESSING, "locked_by": worker_id, writes.TOKEN: token})
            except Exception:
                raise exc from None
            if doc is None:
                raise
            self._unresolved_claims.remove(token)
        return doc_job(doc) if doc is not None else None

    def _adopt_lost_claims(self, worker_id: str, now: float, lease: float) -> list[Job]:
        """Jobs this worker claimed although the reply never came: taken now, their lease renewed."""
        from pymongo import ReturnDocument

        adopted: list[Job] = []
        while self._unresolved_claims:
            token = self._unresolved_claims[0]
            doc = self._jobs.find_one_and_update(
                {"state": PROCESSING, "locked_by": worker_id, writes.TOKEN: token},
                {"$set": {"lease_expires_at": now + lease}},
                return_document=ReturnDocument.AFTER,
            )
            self._unresolved_claims.pop(0)
            if doc is not None:
                adopted.append(doc_job(doc))
        return adopted

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
        attempt: Attempt | None = None,
        keep_outputs: int = 10,
        events: Sequence[Event] = (),
    ) -> bool:
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
        unset: dict[str, str] = {}
        state = changes.get("state")
        if state is not None or "queue" in changes or "duration" in changes:
            plain[DIRTY] = mark()  # the counters' mark, in the same write (see mongo.counts)
        if state is not None:
            if state in CLAIMABLE:
                plain["ready"] = is_due(changes)
            else:
                unset["ready"] = ""
            if state in FINISHED:  # the outbox mark: its dependants are settled after this write
                plain["settle_at"] = changes["updated_at"]
            else:
                unset["settle_at"] = ""
            if state not in KEY_HOLDING:
                unset["active_key"] = ""
            elif lease is None and (states is None or any(s not in KEY_HOLDING for s in states)):
                current = self._jobs.find_one({"_id": job_id}, {"unique_key": 1})  # the key is taken again
                if current is not None and current.get("unique_key") is not None:
                    plain["active_key"] = current["unique_key"]
        if unset:
            update["$unset"] = unset
        if attempt is not None:
            with_attempt(update, attempt, keep_outputs)
        with_outbox(update, events, events[0].at if events else 0.0)
        written = self._write_job(query, update, plain, hooked)
        if written and events:
            self._publish_soon([job_id])
        return written

    def _write_job(
        self, query: dict[str, Any], update: dict[str, Any], plain: dict[str, Any], hooked: dict[str, Any]
    ) -> bool:
        import pymongo.errors as perr

        try:
            if not hooked:
                return writes.update_one(self._jobs, query, update)
            # the hook falls due in the same write as the outcome: one variant matches jobs
            # without a hook, the other jobs with one (a job's hook never changes)
            if writes.update_one(self._jobs, {**query, "on_finish": None}, update):
                return True
            with_hook = {**update, "$set": {**plain, **hooked}}
            return writes.update_one(self._jobs, {**query, "on_finish": {"$ne": None}}, with_hook)
        except perr.DuplicateKeyError:
            raise UniqueKeyTaken(plain.get("active_key")) from None

    @_translate_errors
    def update_jobs(
        self,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...],
        event: Event | None = None,
        batch: str | None = None,
        parentless: bool = False,
        limit: int | None = None,
    ) -> int:
        from dataclasses import replace

        count = 0
        query: dict[str, Any] = {"state": {"$in": list(states)}}
        if batch is not None:
            query["batch"] = batch
        if parentless:
            query.update({"after.0": {"$exists": False}, "on_failure_of": None})
        for doc in self._jobs.find(query, {"_id": 1}).limit(limit or 0):
            logged = [replace(event, job_id=doc["_id"])] if event is not None else []
            count += self.update_job(doc["_id"], changes, states=states, events=logged)
        return count

    @_translate_errors
    def purge(
        self,
        states: list[str],
        finished_before: float | None = None,
        limit: int | None = None,
        batch: str | None = None,
        job_id: str | None = None,
    ) -> int:
        query = self._purge_query(states, finished_before)
        if batch is not None:
            query["batch"] = batch
        if job_id is not None:
            query["_id"] = job_id
        if limit is not None:
            ids = [doc["_id"] for doc in self._jobs.find(query, {"_id": 1}).limit(limit)]
            query = {**query, "_id": {"$in": ids}}  # re-checked: a job retried meanwhile stays
        return int(self._jobs.delete_many(self._count_out(query)).deleted_count)

    @_translate_errors
    def count_purgeable(self, states: list[str], finished_before: float | None = None) -> int:
        return int(self._jobs.count_documents(self._purge_query(states, finished_before)))

    @staticmethod
    def _purge_query(states: list[str], finished_before: float | None) -> dict[str, Any]:
        # a job whose events are not published yet is kept until they are
        query: dict[str, Any] = {
            "state": {"$in": states},
            "settle_at": {"$exists": False},
            "outbox_at": {"$exists": False},
        }
        if finished_before is not None:
            query["finished_at"] = {"$lt": finished_before}
        return query

    # --- the outbox and the repair pass -------------------------------------------------------

    @_translate_errors
    def unsettled(self, before: float, limit: int = MAX_UNSETTLED) -> list[tuple[str, str, float]]:
        cursor = self._jobs.find({"settle_at": {"$lte": before}}, {"state": 1, "settle_at": 1}).limit(limit)
        return [(doc["_id"], doc["state"], doc["settle_at"]) for doc in cursor]

    @_translate_errors
    def mark_settled(self, job_id: str, mark: float) -> None:
        self._jobs.update_one({"_id": job_id, "settle_at": mark}, {"$unset": {"settle_at": ""}})

    @_translate_errors
    def repair(self, now: float) -> int:
        """Publish committed bulk inserts and remove abandoned ones (:meth:`sweep_batches`),
        publish the events writers left in outboxes (:meth:`publish_due`), then count marked
        jobs and fold the counters' deltas (:mod:`.counts`)."""
        done = self.sweep_batches(now) + self.publish_due(now - PUBLISH_GRACE_S)
        self.sync_counts()  # the counters' bookkeeping: nothing becomes claimable by it
        self.fold_counts()
        return done

    # --- waking -----------------------------------------------------------------------------

    def waker(self, worker_id: str) -> Waker | None:
        """A change-stream watcher where the server offers one (replica sets); else None: poll."""
        from queuectl.store.mongo.waker import ChangeStreamWaker, open_stream

        try:
            stream = open_stream(self._jobs)
        except Exception:
            return None
        return ChangeStreamWaker(lambda: open_stream(self._jobs), stream)

    def close(self) -> None:
        self._client.close()

    def explain_claim(self, queue: str | None, now: float) -> dict[str, Any]:
        """The server's query plan for a claim's search (used to prove index use)."""
        query: dict[str, Any] = {"ready": True, "state": {"$in": list(CLAIMABLE)}, "run_at": {"$lte": now}}
        if queue:
            query["queue"] = queue
        return dict(self._jobs.find(query).sort([("priority", -1), ("created_at", 1)]).limit(1).explain())
