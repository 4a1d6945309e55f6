"""Bulk inserts that are all-or-nothing without transactions: one commit document per batch.

1. **Stage**: a ``batches`` document ``{state: "staging"}`` is written first, then the jobs, in
   chunks, as invisible documents (state ``enqueuing``, tagged with the batch id, their real
   state kept aside). The batch document's ``touched_at`` moves on with every chunk.
2. **Commit**: one compare-and-set flips the batch document from staging to committed. That
   single-document write is the commit point: before it nothing of the batch is visible or
   ever will be; after it every job will be. A lost reply is resolved by reading the batch.
3. **Publish**: each staged job gets its real state; repeatable, and the batch document goes.

A client that dies mid-way leaves a batch behind; :meth:`MongoBatches.sweep_batches` (any
worker's repair pass) publishes committed batches and removes ones abandoned while staging
(untouched for :data:`ABANDONED_AFTER_S`: aborted first, so a slow client can no longer commit
them, then their staged jobs are deleted, which frees their ids and unique keys).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from queuectl.core.defaults import MONGO_INSERT_BATCH as CHUNK
from queuectl.core.errors import Conflict, StoreUnavailable
from queuectl.core.models import Job
from queuectl.store.mongo.counts import DIRTY
from queuectl.store.mongo.docs import job_doc
from queuectl.store.mongo.writes import TOKEN, is_uncertain, new_token, resolved

STAGING = "enqueuing"  # a staged job's state: invisible to claims and reads
STAGED, COMMITTED, ABORTED = "staging", "committed", "aborted"
ABANDONED_AFTER_S = 600.0  # a staging batch untouched this long belongs to a client that died
FORGET_ABORTED_AFTER_S = 86400.0  # an aborted batch's record is kept a day (a late chunk is swept too)


class BatchAborted(Conflict):
    """The batch was swept as abandoned before it could commit (its client stalled too long)."""


class MongoBatches:
    """Staged bulk inserts; needs ``_jobs``, ``_batches``, ``_now`` and ``_insert_conflict``."""

    _jobs: Any
    _batches: Any
    _staging_states: dict[str, str]
    _now: Callable[[], float]
    _insert_conflict: Callable[[dict[str, Any]], Exception]

    def _stage_jobs(self, jobs: Iterable[Job]) -> int:
        """Steps 1-3 (see the module); returns how many jobs, all committed, or raises with none."""
        batch = new_token()
        count = 0
        committed = False
        self._staging_states = staging = {}  # job_states, asked while the iterable runs, sees these
        try:
            resolved(
                lambda: self._batches.insert_one({"_id": batch, "state": STAGED, "touched_at": self._now()}),
                lambda: self._batches.find_one({"_id": batch}),
            )
            chunk: list[dict[str, Any]] = []
            for job in jobs:
                staging[job.id] = job.state
                doc = job_doc(job)
                doc["final_state"], doc["state"], doc["staging_batch"] = doc["state"], STAGING, batch
                del doc[DIRTY]  # not counted while staged: publishing marks it
                chunk.append(doc)
                count += 1
                if len(chunk) >= CHUNK:
                    self._stage_chunk(batch, chunk)
            if chunk:
                self._stage_chunk(batch, chunk)
            if not count:
                self._batches.delete_one({"_id": batch})
                return 0
            committed = self._commit(batch)
        except BaseException:
            # a commit whose reply was lost twice: the batch document still says what happened
            if committed or self._abandon(batch) != COMMITTED:
                raise
        finally:
            self._staging_states = {}
        try:
            self._publish(batch)
        except StoreUnavailable:
            pass  # committed: the jobs will be live; the next repair pass publishes the rest
        except Exception as exc:
            if not is_uncertain(exc):
                raise
        return count

    def _stage_chunk(self, batch: str, chunk: list[dict[str, Any]]) -> None:
        """Insert one chunk of staged jobs; after a lost reply only the ones missing are sent again."""
        import pymongo.errors as perr

        if not self._batches.update_one(
            {"_id": batch, "state": STAGED}, {"$set": {"touched_at": self._now()}}
        ).matched_count:
            raise BatchAborted("the bulk enqueue stalled so long that it was swept as abandoned; run it again")
        docs = list(chunk)
        chunk.clear()
        retrying = False  # after a lost reply, a duplicate of our own staged job is no conflict
        for _ in range(2):
            try:
                self._jobs.insert_many(docs, ordered=True)
                return
            except perr.BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                first = errors[0] if errors else {}
                if errors and first.get("code") != 11000:
                    raise
                if errors and not (retrying and self._staged_by(batch, [first.get("op", {}).get("_id")])):
                    raise self._insert_conflict(first.get("op", {})) from None
                if not errors and not is_uncertain(exc):
                    raise
            except Exception as exc:
                if not is_uncertain(exc):
                    raise
            retrying = True
            mine = self._staged_by(batch, [doc["_id"] for doc in docs])
            docs = [doc for doc in docs if doc["_id"] not in mine]  # the rest: sent once more
            if not docs:
                return
        raise StoreUnavailable("MongoDB did not confirm a bulk insert; nothing was enqueued")

    def _staged_by(self, batch: str, ids: list[Any]) -> set[Any]:
        return {doc["_id"] for doc in self._jobs.find({"_id": {"$in": ids}, "staging_batch": batch}, {"_id": 1})}

    def _commit(self, batch: str) -> bool:
        """The commit point: staging -> committed, one compare-and-set on the batch document."""

        def write() -> bool:
            return bool(
                self._batches.update_one({"_id": batch, "state": STAGED}, {"$set": {"state": COMMITTED}}).matched_count
            )

        def applied() -> bool | None:
            doc = self._batches.find_one({"_id": batch}, {"state": 1})
            return True if doc and doc["state"] == COMMITTED else None

        if resolved(write, applied):
            return True
        doc = self._batches.find_one({"_id": batch}, {"state": 1})
        if doc and doc["state"] == COMMITTED:
            return True
        raise BatchAborted("the bulk enqueue stalled so long that it was swept as abandoned; run it again")

    def _publish(self, batch: str) -> None:
        """Give every staged job of a committed batch its real state; repeatable."""
        for state in self._jobs.distinct("final_state", {"staging_batch": batch}):
            self._jobs.update_many(
                {"staging_batch": batch, "final_state": state},
                {
                    "$set": {"state": state, TOKEN: batch, DIRTY: batch},
                    "$unset": {"staging_batch": "", "final_state": ""},
                },
            )
        self._batches.delete_one({"_id": batch, "state": COMMITTED})

    def _abandon(self, batch: str) -> str | None:
        """Best effort for a batch that failed before its commit was confirmed: abort it and
        delete what it staged (what a failure here leaves, the sweeper removes later). Returns
        the batch's state as found (committed: it did commit after all), None if unknown."""
        try:
            self._batches.update_one({"_id": batch, "state": STAGED}, {"$set": {"state": ABORTED}})
            doc = self._batches.find_one({"_id": batch}, {"state": 1})
            if doc is not None and doc["state"] == COMMITTED:
                return COMMITTED
            self._jobs.delete_many({"staging_batch": batch})
            self._batches.delete_one({"_id": batch, "state": ABORTED})
            return ABORTED
        except Exception:
            return None

    def sweep_batches(self, now: float | None = None) -> int:
        """Finish what dead or failed clients left: publish committed batches, remove abandoned
        ones. Returns how many batches were dealt with. Safe to run from every worker at once."""
        now = self._now() if now is None else now
        done = 0
        for doc in self._batches.find({"state": COMMITTED}, {"_id": 1}):
            self._publish(doc["_id"])
            done += 1
        stalled = {"state": STAGED, "touched_at": {"$lt": now - ABANDONED_AFTER_S}}
        for doc in self._batches.find(stalled, {"_id": 1}):
            self._batches.update_one(
                {"_id": doc["_id"], "state": STAGED}, {"$set": {"state": ABORTED, "touched_at": now}}
            )
        for doc in self._batches.find({"state": ABORTED}, {"_id": 1, "touched_at": 1}):
            self._jobs.delete_many({"staging_batch": doc["_id"]})
            if doc.get("touched_at", 0) < now - FORGET_ABORTED_AFTER_S:
                self._batches.delete_one({"_id": doc["_id"]})
            done += 1
        return done
