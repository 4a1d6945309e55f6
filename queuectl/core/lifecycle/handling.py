"""The transitions a user asks for on one job, beside cancel: hold, release, remove.

Each is one unit of work (one transaction on a SQL store; on MongoDB one guarded single-document
write, then a follow-up that is idempotent). A job is named by id; a bulk verb calls these per job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from queuectl.core.errors import Conflict, NotFound
from queuectl.core.lifecycle.rules import CANCELLABLE, FINISHED, HOLDABLE
from queuectl.core.lifecycle.transitions import cancel
from queuectl.core.models import HELD, PENDING, PROCESSING

if TYPE_CHECKING:
    from queuectl.store.base import Store


def _job_state(store: Store, job_id: str) -> str:
    job = store.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job.state


def hold(store: Store, job_id: str, now: float) -> None:
    """Keep a pending or failed job back: it stays visible (and keeps its unique key) and is never
    claimed until :func:`release`. Conflict for a job in any other state."""
    with store.unit():
        if store.update_job(job_id, {"state": HELD, "updated_at": now}, states=HOLDABLE):
            return
        state = _job_state(store, job_id)
    if state == HELD:
        raise Conflict(f"job {job_id} is held already")
    raise Conflict(f"job {job_id} is {state}: only a pending or failed job can be held")


def release(store: Store, job_id: str, now: float) -> None:
    """Let a held job run again: back to pending (it still waits for its ``run_at``, if later).
    Conflict for a job that is not held."""
    with store.unit():
        if store.update_job(job_id, {"state": PENDING, "updated_at": now}, states=(HELD,)):
            released = True
        else:
            released = False
            state = _job_state(store, job_id)
    if released:
        store.notify()
        return
    raise Conflict(f"job {job_id} is {state}, not held")


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
