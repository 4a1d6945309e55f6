"""The transitions a user asks for on one job, beside cancel: hold, release, restart, remove.

Each is one unit of work (one transaction on a SQL store; on MongoDB one guarded single-document
write, then a follow-up that is idempotent). A job is named by id; a bulk verb calls these per job.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from queuectl.core.errors import Conflict, NotFound, UniqueKeyTaken
from queuectl.core.lifecycle import events
from queuectl.core.lifecycle.rules import (
    CANCELLABLE,
    FINISHED,
    HOLDABLE,
    RESTART_EDITS,
    RESTARTABLE,
    ending_changes,
    parents_of,
    resumed_state,
)
from queuectl.core.lifecycle.settling import settle, settle_finished
from queuectl.core.lifecycle.transitions import cancel
from queuectl.core.models import CANCELLED, HELD, PENDING, PROCESSING, WAITING, Job

if TYPE_CHECKING:
    from queuectl.store.base import Store


def _job_state(store: Store, job_id: str) -> str:
    job = store.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job.state


def hold(store: Store, job_id: str, now: float) -> None:
    """Keep a pending, failed or waiting job back: it stays visible (and keeps its unique key) and
    is never claimed (nor released by its parents) until :func:`release`. Conflict otherwise."""
    with store.unit():
        if store.update_job(job_id, {"state": HELD, "updated_at": now}, states=HOLDABLE):
            return
        state = _job_state(store, job_id)
    if state == HELD:
        raise Conflict(f"job {job_id} is held already")
    raise Conflict(f"job {job_id} is {state}: only a pending, failed or waiting job can be held")


def release(store: Store, job_id: str, now: float) -> str:
    """Let a held job go on; returns the state it is in now. Its parents decide, as they are now
    (not as they were when it was held): ``pending`` (it still waits for its ``run_at``, if
    later), ``waiting`` while a parent is unfinished, or ``cancelled`` if a parent ended so that
    it can never run (then its own dependants are settled too). Conflict for a job not held."""
    with store.unit():
        job = store.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        if job.state != HELD:
            raise Conflict(f"job {job_id} is {job.state}, not held")
        parents = parents_of(job)
        state, reason = resumed_state(job, store.job_states(parents) if parents else {})
        if state == CANCELLED:
            written = store.update_job(
                job_id,
                ending_changes(CANCELLED, now, reason),
                states=(HELD,),
                events=[events.cancelled(job, now, reason)],
            )
            if written:
                settle_finished(store, job_id, CANCELLED, now)
        else:
            written = store.update_job(job_id, {"state": state, "updated_at": now}, states=(HELD,))
    if not written:
        raise Conflict(f"job {job_id} changed meanwhile; look at it again (queuectl show {job_id})")
    if state == WAITING:
        _resettle(store, parents, now)
    if state == PENDING:
        store.notify()
    return state


def _resettle(store: Store, parents: list[str], now: float) -> None:
    """Without transactions a parent may have finished, and settled its waiting children, between
    our look at it and our write: settle it again (idempotent), as an enqueue does."""
    if store.transactional:
        return
    for parent, state in store.job_states(parents).items():
        if state in FINISHED and settle(store, parent, state, now):
            store.notify()


def restart(store: Store, job: Job, edits: dict[str, Any], now: float) -> str:
    """Run a finished job again under the same id: back to ``pending`` (``waiting`` if a parent
    is unfinished again), with ``edits`` applied (:data:`RESTART_EDITS`, already checked), its
    attempt count reset as for a fresh run while its history keeps the old runs (their numbers
    go on), a ``restarted`` event logged. Returns the new state.

    Only this job changes: its dependants that ran already keep their runs, and those cancelled
    because it failed stay cancelled (restart them too). Conflict if it is not finished, if a
    parent's end means it could never run, or if another job holds its unique key now."""
    if job.state not in RESTARTABLE:
        raise Conflict(f"job {job.id} is {job.state}: only a {', '.join(RESTARTABLE)} job can be restarted")
    parents = parents_of(job)
    with store.unit():
        if not store.transactional:
            settle(store, job.id, job.state, now)  # its dependants first: the write below clears its mark
        state, reason = resumed_state(job, store.job_states(parents) if parents else {})
        if state == CANCELLED:
            raise Conflict(f"job {job.id} could never run again ({reason}); restart its parent first")
        changes: dict[str, Any] = {name: edits[name] for name in RESTART_EDITS if name in edits}
        changes.update(
            state=state,
            attempts=0,
            run_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
            duration=None,
            exit_code=None,
            last_error=None,
            output=None,
            locked_by=None,
            lease_expires_at=None,
            hook_state=None,
            hook_error=None,
            progress_done=None,
            progress_total=None,
            progress_message=None,
            progress_at=None,
        )
        edited = ",".join(sorted(edits)) or None
        logged = events.job_event(
            events.RESTARTED, replace(job, queue=changes.get("queue", job.queue)), now, state, edited=edited
        )
        try:
            written = store.update_job(job.id, changes, states=(job.state,), events=[logged])
        except UniqueKeyTaken:
            raise Conflict(
                f"job {job.id}'s unique key {job.unique_key!r} is held by another active job; "
                "restart it once that one has finished"
            ) from None
    if not written:
        raise Conflict(f"job {job.id} changed meanwhile; look at it again (queuectl show {job.id})")
    if state == WAITING:
        _resettle(store, parents, now)
    else:
        store.notify()
    return state


def remove(store: Store, job_id: str, now: float) -> None:
    """Delete a job that is not running. One not finished yet is cancelled first, so the jobs
    waiting on it are settled as by a cancel; then it is deleted with its dependency edges.
    Conflict for a processing job (cancel it first: its run must be stopped)."""
    state = _job_state(store, job_id)
    if state == PROCESSING:
        raise Conflict(f"job {job_id} is running: cancel it first (queuectl cancel {job_id})")
    if state in CANCELLABLE:
        try:
            cancel(store, job_id, now)
        except Conflict:
            pass  # it finished meanwhile: delete it as it is
    if not store.purge(list(FINISHED), job_id=job_id):
        state = _job_state(store, job_id)
        raise Conflict(f"job {job_id} is {state} and was not removed; try again")
