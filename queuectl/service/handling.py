"""Handling jobs one by one or in bulk: cancel, rm, retry, hold, release, restart, and waiting for
a whole batch or queue. One function per use case, for every front end (the CLI, the HTTP API).

A bulk verb takes a :class:`Selection`: ids, or filters (states, a queue, a batch), or ``everything``.
Jobs matched by filters are listed first (in pages, by index), then handled one by one, each in its
own unit of work: a job that changed state meanwhile is skipped, not an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from queuectl.core import lifecycle
from queuectl.core.errors import Conflict, InvalidInput, NotFound, QueuectlError
from queuectl.core.lifecycle import CANCELLABLE, FINISHED, RESTART_EDITS
from queuectl.core.models import CANCELLED, DEAD, HELD, PROCESSING, STAGED, STATES, Job
from queuectl.core.validation import build_job, check_state, label_filters
from queuectl.service.config import load_config
from queuectl.service.jobs import get_job
from queuectl.store import Store

PAGE = 1000  # jobs listed per query while matching filters
UNFINISHED = tuple(state for state in (*CANCELLABLE, STAGED) if state not in FINISHED)


@dataclass
class Selection:
    """Which jobs a bulk verb acts on: the ``ids`` given, else every job matching the filters
    (``everything``: no filter at all, which a front end confirms first)."""

    ids: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    queue: str | None = None
    batch: str | None = None
    everything: bool = False
    labels: list[str] = field(default_factory=list)  # --label k=v: every one of them

    @property
    def filtered(self) -> bool:
        return bool(self.states or self.queue or self.batch or self.labels)


@dataclass
class BulkResult:
    """The jobs a bulk verb handled, and for each job named by id that it could not, why."""

    done: list[str] = field(default_factory=list)
    errors: list[tuple[str, QueuectlError]] = field(default_factory=list)
    skipped: int = 0  # matched by a filter, but changed state before its turn


def _matching(store: Store, selection: Selection, allowed: tuple[str, ...], verb: str) -> Iterator[str]:
    """The ids a selection names (checked up front: a bad selection fails before anything is done)."""
    if selection.ids and (selection.filtered or selection.everything):
        raise InvalidInput(f"{verb}: give job ids or filters (--state, --queue, --label, --batch, --all), not both")
    if not selection.ids and not selection.filtered and not selection.everything:
        raise InvalidInput(f"{verb}: give job ids, a filter (--state, --queue, --label, --batch) or --all")
    for state in selection.states:
        check_state(state)
        if state not in allowed:
            raise InvalidInput(f"cannot {verb} {state} jobs: only {', '.join(allowed)} jobs")
    if selection.ids:
        return iter(dict.fromkeys(selection.ids))
    states = tuple(dict.fromkeys(selection.states)) or allowed
    labels = label_filters(selection.labels)
    found: list[str] = []
    for state in states:
        before: float | None = None
        while True:
            page = store.list_jobs(
                state=state, queue=selection.queue, limit=PAGE, before=before, batch=selection.batch, labels=labels
            )
            found.extend(job.id for job in page)
            if len(page) < PAGE:
                break
            before = page[-1].created_at
    return iter(found)


def _bulk(
    store: Store, selection: Selection, allowed: tuple[str, ...], verb: str, act: Callable[[str, float], Any]
) -> BulkResult:
    result = BulkResult()
    by_id = bool(selection.ids)
    for job_id in _matching(store, selection, allowed, verb):
        try:
            act(job_id, store.now())
        except (Conflict, NotFound) as exc:
            if by_id:
                result.errors.append((job_id, exc))
            else:
                result.skipped += 1
            continue
        result.done.append(job_id)
    return result


def cancel_jobs(store: Store, selection: Selection) -> BulkResult:
    """Cancel each selected job that has not finished. If any was running, the workers are woken
    once at the end (even when a failure cuts the bulk short) to renew their leases, so a running
    one is killed at once (on MongoDB within a heartbeat); once, because each wake makes every
    worker renew all its leases."""
    stopped: list[str] = []

    def cancel(job_id: str, now: float) -> Job:
        return lifecycle.cancel(store, job_id, now, on_running=lambda: stopped.append(job_id))

    try:
        return _bulk(store, selection, CANCELLABLE, "cancel", cancel)
    finally:
        if stopped:
            store.notify(stop=True)


REMOVABLE = tuple(state for state in STATES if state != PROCESSING)


def remove_jobs(store: Store, selection: Selection) -> BulkResult:
    """Delete each selected job that is not running (one not finished is cancelled first)."""
    return _bulk(store, selection, REMOVABLE, "remove", lambda job_id, now: lifecycle.remove(store, job_id, now))


def retry_jobs(store: Store, selection: Selection) -> BulkResult:
    """Put each selected dead job back to pending with its attempts reset."""
    return _bulk(store, selection, (DEAD,), "retry", lambda job_id, now: lifecycle.retry_dead(store, job_id, now))


def hold_job(store: Store, job_id: str) -> None:
    """Keep a pending, failed or waiting job back from every worker until :func:`release_job`."""
    lifecycle.hold(store, job_id, store.now())


def release_job(store: Store, job_id: str) -> str:
    """Let a held job go on; returns its state now (its parents as they are now decide)."""
    return lifecycle.release(store, job_id, store.now())


def restart_job(store: Store, job_id: str, edits: dict[str, Any]) -> str:
    """Run a finished job again under its own id, as it was or with ``edits`` (command, priority,
    queue, max_retries, timeout): it keeps its history, and its next run is numbered after its
    old ones. Returns the state it is in now (pending, or waiting for a parent again).

    InvalidInput for an edit that is not one of those or not valid; Conflict for a job not
    finished yet (it will run anyway), or whose unique key another job holds now."""
    job = get_job(store, job_id)
    unknown = set(edits) - set(RESTART_EDITS)
    if unknown:
        raise InvalidInput(f"restart cannot change {', '.join(sorted(unknown))}")
    edits = {name: value for name, value in edits.items() if value is not None}
    if edits:  # checked as an enqueue checks them
        checked = build_job({"command": job.command, **edits}, load_config(store), store.now())
        edits = {name: getattr(checked, name) for name in edits}
    return lifecycle.restart(store, job, edits, store.now())


# --- waiting for a batch or a queue ---------------------------------------------------------------


@dataclass
class GroupWait:
    """The end of a wait for a batch or a queue: how many jobs ended dead or cancelled there
    (a batch: of its own jobs; a queue: one look, since a queue also holds older jobs)."""

    timed_out: bool
    dead: bool = False
    cancelled: bool = False
    left: dict[str, int] = field(default_factory=dict)


def _batch_left(store: Store, batch: str) -> dict[str, int]:
    left = {}
    for state in UNFINISHED:
        if store.list_jobs(state=state, batch=batch, limit=1):
            left[state] = 1
    return left


def _queue_left(store: Store, queue: str) -> dict[str, int]:
    per_state = store.counts().get(queue, {})
    return {state: count for state, count in per_state.items() if state not in FINISHED and count}


def wait_for_group(
    store: Store,
    batch: str | None,
    queue: str | None,
    timeout: float | None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> GroupWait:
    """Block until every job of ``batch`` (or of ``queue``) is finished, or the timeout passes.
    A held job is not finished: waiting for its queue lasts until it is released and has run."""
    if (batch is None) == (queue is None):
        raise InvalidInput("wait: give job ids, --batch B or --queue Q")
    if batch is not None and not store.list_jobs(batch=batch, limit=1):
        raise NotFound(f"no batch {batch!r} (enqueue --file prints its batch id)")
    if queue is not None:
        from queuectl.service.queues import check_known

        check_known(store, queue)
    deadline = None if timeout is None else clock() + timeout
    interval = 0.05
    while True:
        left = _batch_left(store, batch) if batch is not None else _queue_left(store, queue or "")
        if not left or (deadline is not None and clock() >= deadline):
            break
        pause = interval if deadline is None else min(interval, max(0.0, deadline - clock()))
        sleep(pause)
        interval = min(interval * 1.5, 1.0)
    if left:
        return GroupWait(True, left=left)
    if batch is not None:
        dead = bool(store.list_jobs(state=DEAD, batch=batch, limit=1))
        cancelled = bool(store.list_jobs(state=CANCELLED, batch=batch, limit=1))
        return GroupWait(False, dead, cancelled)
    return GroupWait(False)


def held_jobs(store: Store, queue: str | None = None, limit: int = 50) -> list[Job]:
    return store.list_jobs(state=HELD, queue=queue, limit=limit)
