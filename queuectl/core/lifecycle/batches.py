"""A bulk enqueue too big for one short transaction: staged in chunks, committed at one point.

One transaction for a whole ``enqueue --file`` of 600,000 lines held the write lock for 13 s:
every heartbeat, claim and outcome waited behind it, and past the busy timeout they failed. So on
a SQL store a file is written in one transaction only up to
:data:`~queuectl.core.defaults.BULK_ONE_TRANSACTION` jobs (about a second of lock); the rest is
written in chunks, each its own short transaction, as ``staged`` jobs that nothing lists, counts
or claims but that hold their ids and unique keys. Still all-or-nothing:

1. when the first transaction finds more input, it creates a ``batches`` record in state
   ``staging`` and turns the jobs it wrote into staged ones; each further chunk is inserted
   staged and touches the record (in the same transaction);
2. **the commit point**: one compare-and-set flips the record to ``committed``. A failure before
   it deletes what was staged; a stager that died leaves a record nobody touches, and the
   sweeper removes it and its rows once it is older than ``BATCH_ABANDONED_AFTER_S``;
3. publishing, in chunks: a staged job becomes pending, or waiting for its parents, decided from
   their states *now* (a parent may have finished since the child was staged). A publisher that
   died is finished by the sweeper, so a committed batch always becomes live in full.

A stager that was stopped for longer than the abandon time finds its record gone at the next
chunk or at the commit, and fails with nothing enqueued.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from queuectl.core.defaults import BATCH_ABANDONED_AFTER_S, BULK_CHUNK, BULK_ONE_TRANSACTION
from queuectl.core.errors import Conflict, QueuectlError
from queuectl.core.lifecycle import events
from queuectl.core.lifecycle.rules import ending_changes, parents_of, start_state
from queuectl.core.models import CANCELLED, COMPLETED, DEAD, PENDING, STAGED, WAITING, Event, Job

if TYPE_CHECKING:
    from queuectl.store.base import Store

STAGING = "staging"  # a batch record's states
COMMITTED = "committed"
ABANDONED = "abandoned"  # its rows are being deleted


class BatchAbandoned(Conflict):
    """The sweeper removed a batch whose stager had gone quiet for too long: nothing enqueued."""


def first_part(jobs: Iterator[Job]) -> Iterator[Job]:
    """The jobs a bulk enqueue writes in its first transaction, as any small enqueue does."""
    return itertools.islice(jobs, BULK_ONE_TRANSACTION)


def begin(store: Store, batch: str) -> None:
    """Inside the first transaction, once the input proved longer than its first part: the batch
    record is created and the jobs written so far become staged (a job's start state is decided
    again at publishing)."""
    now = time.time()
    store.registry_put("batches", batch, {"state": STAGING, "created_at": now, "touched_at": now})
    store.update_jobs({"state": STAGED, "updated_at": now}, states=(PENDING, WAITING), batch=batch)


def enqueue_staged(store: Store, batch: str, jobs: Iterable[Job], now: float | None) -> int:
    """The rest of a bulk enqueue after :func:`begin`: stage it chunk by chunk, commit, publish.
    Returns how many jobs the rest held; on any failure nothing of the batch is left."""
    count = 0
    try:
        iterator = iter(jobs)
        while chunk := list(itertools.islice(iterator, BULK_CHUNK)):
            _stage(store, batch, chunk)
            count += len(chunk)
        committed = store.registry_update(
            "batches", {"state": COMMITTED, "touched_at": time.time()}, batch, {"state": STAGING}
        )
        if not committed:
            raise BatchAbandoned(_abandoned(batch))
    except BaseException:
        with contextlib.suppress(QueuectlError):  # else the sweeper removes them
            discard(store, batch)
        raise
    with contextlib.suppress(QueuectlError):  # committed: the sweeper finishes what this misses
        publish(store, batch, time.time() if now is None else now)
    return count


def _abandoned(batch: str) -> str:
    return (
        f"bulk enqueue {batch} was stopped for more than {BATCH_ABANDONED_AFTER_S:g}s and abandoned; "
        "nothing was enqueued: run it again"
    )


def _stage(store: Store, batch: str, chunk: list[Job]) -> None:
    """One chunk, one transaction: the rows and a touch of the batch record (which must exist)."""
    with store.unit():
        store.insert_jobs(_as_staged(store, batch, chunk))
        if not store.registry_update("batches", {"touched_at": time.time()}, batch, {"state": STAGING}):
            raise BatchAbandoned(_abandoned(batch))


def _as_staged(store: Store, batch: str, chunk: list[Job]) -> Iterator[Job]:
    """The chunk's jobs as staged rows of ``batch``; parents are checked as an enqueue checks
    them (they must exist and may still end the right way), but the start state is decided at
    publishing. A parent staged by another batch may yet vanish, so it counts as no job."""

    def staged_parent(parent: str) -> str | None:
        found = store.get(parent, staged=True)
        return WAITING if found is not None and found.batch == batch else None

    for job in chunk:
        if job.after or job.on_failure_of:
            start_state(job.id, *_parent_states(store, job, staged_parent))  # raises if it can't exist
        job.state, job.batch = STAGED, batch
        yield job


def _parent_states(
    store: Store, job: Job, staged: Callable[[str], str | None], purged_finished: bool = False
) -> tuple[dict[str, str | None], tuple[str, str | None] | None]:
    """The arguments of :func:`start_state` for ``job``: its parents' states, a staged parent's
    as ``staged(parent)`` says; with ``purged_finished``, a parent that is no more as having
    ended the way the child needs (see :func:`_start_changes`)."""
    states: dict[str, str | None] = dict(store.job_states(parents_of(job)))
    for parent, state in states.items():
        if state == STAGED:
            states[parent] = staged(parent)
    after = {parent: states.get(parent) or (COMPLETED if purged_finished else None) for parent in job.after}
    failure = None
    if job.on_failure_of:
        failure = (job.on_failure_of, states.get(job.on_failure_of) or (DEAD if purged_finished else None))
    return after, failure


def publish(store: Store, batch: str, now: float, chunks: int | None = None) -> bool:
    """Make the staged jobs of a committed ``batch`` live, one chunk per transaction (at most
    ``chunks`` of them); returns True when none is left (the batch record is then deleted).

    Jobs without parents in one statement each chunk; a job with parents gets the state its
    parents' states give now: waiting, pending, or cancelled if one has ended the wrong way
    since (as settling would have cancelled it). A parent still staged counts as not finished.
    Each job's ``enqueued`` event is logged in the transaction that makes it visible.
    """
    visible = Event(events.ENQUEUED, now, state=PENDING)  # logged per job, as it becomes visible
    for _ in itertools.count() if chunks is None else range(chunks):
        with store.unit():  # one chunk: the batch index walks only the staged jobs
            moved = store.update_jobs(  # due from run_at: a claim promotes them (not ready yet)
                {"state": PENDING, "updated_at": now},
                states=(STAGED,),
                event=visible,
                batch=batch,
                parentless=True,
                limit=BULK_CHUNK,
            )
            children = [] if moved else store.list_jobs(state=STAGED, batch=batch, limit=BULK_CHUNK)
            for child in children:
                changes = _start_changes(store, child, now)
                logged = [events.job_event(events.ENQUEUED, child, now, changes["state"])]
                if changes["state"] == CANCELLED:
                    logged.append(events.cancelled(child, now, changes.get("last_error")))
                store.update_job(child.id, changes, states=(STAGED,), events=logged)
        if moved or children:
            store.notify()
        else:
            store.registry_delete("batches", batch, {"state": COMMITTED})
            return True
    return False


def _start_changes(store: Store, child: Job, now: float) -> dict[str, Any]:
    # a parent still staged has not finished; one purged since staging had finished, and (as
    # settling counts it) ended the way the child needs
    try:
        state = start_state(child.id, *_parent_states(store, child, lambda parent: WAITING, purged_finished=True))
    except QueuectlError as exc:
        return ending_changes(CANCELLED, now, str(exc))
    return {"state": state, "run_at": max(child.run_at, now), "updated_at": now}


def discard(store: Store, batch: str) -> None:
    """Delete a batch that never committed: mark its record abandoned first (so a stager still
    writing fails at its next chunk), then delete its rows, one chunk per transaction."""
    store.registry_update("batches", {"state": ABANDONED}, batch, {"state": STAGING})
    while store.purge([STAGED], batch=batch, limit=BULK_CHUNK):
        pass
    store.registry_delete("batches", batch, {"state": ABANDONED})


def sweep(store: Store, now: float) -> bool:
    """The housekeeper's pass over bulk enqueues: finish publishing a committed batch whose
    publisher died, abandon a staging batch untouched for ``BATCH_ABANDONED_AFTER_S`` and delete
    an abandoned one's rows. Bounded work (one chunk); returns True when more is left. A store
    without transactions stages its bulk inserts itself, in single-document steps, and sweeps
    them in its own repair pass."""
    if not store.transactional:
        return False
    for record in store.registry_list("batches"):
        batch, state, quiet = record["id"], record["state"], now - record["touched_at"]
        if state == COMMITTED and quiet > BATCH_ABANDONED_AFTER_S / 4:
            return not publish(store, batch, now, chunks=1)
        if state == STAGING and quiet > BATCH_ABANDONED_AFTER_S:
            expect = {"state": STAGING, "touched_at": record["touched_at"]}  # not if it moved meanwhile
            return bool(store.registry_update("batches", {"state": ABANDONED}, batch, expect))
        if state == ABANDONED:
            if not store.purge([STAGED], batch=batch, limit=BULK_CHUNK):
                store.registry_delete("batches", batch, {"state": ABANDONED})
            return True
    return False
