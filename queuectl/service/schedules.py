"""Cron schedules: add, list, pause, resume, remove, and firing the due ones exactly once.

A schedule is a registry record; at each fire time it enqueues one job made from its spec.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Any

from queuectl.core.cron import next_fire_time
from queuectl.core.errors import Conflict, InvalidInput, NotFound
from queuectl.core.lifecycle import events
from queuectl.core.models import Event, Job, Schedule
from queuectl.core.validation import build_job
from queuectl.service.config import load_config
from queuectl.store import Store

_SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")  # + "-YYYYmmddTHHMMSS" fits a job id


def _not_found(name: str) -> NotFound:
    return NotFound(f"no schedule named {name!r}; see queuectl schedule list")


def insert_schedule(store: Store, schedule: Schedule) -> None:
    """Store a schedule as it is; Conflict if the name is taken."""
    if not store.registry_put("schedules", schedule.name, asdict(schedule), replace=False):
        raise Conflict(f"a schedule named {schedule.name!r} already exists")


def add_schedule(store: Store, name: str, cron: str, spec: dict[str, Any], tz: str, now: float) -> Schedule:
    """Validate and store a schedule; its job spec is checked now, not at the first fire."""
    if not _SCHEDULE_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid schedule name {name!r}: use 1-48 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if spec.get("id") or spec.get("after") or spec.get("on_failure_of") or spec.get("delay") or spec.get("run_at"):
        raise InvalidInput("a schedule's job cannot have an id, parents, delay or run_at")
    build_job(spec, load_config(store), now)  # raises on a bad spec
    schedule = Schedule(
        name=name, cron=cron, tz=tz, spec=spec, next_fire_at=next_fire_time(cron, tz, now), created_at=now
    )
    insert_schedule(store, schedule)
    return schedule


def list_schedules(store: Store) -> list[Schedule]:
    """Every schedule, by name."""
    return [Schedule(**record) for record in store.registry_list("schedules")]


def remove_schedule(store: Store, name: str) -> None:
    """Delete a schedule (its jobs stay); NotFound if there is none by that name."""
    if not store.registry_delete("schedules", name):
        raise _not_found(name)


def set_schedule_paused(store: Store, name: str, paused: bool, next_fire_at: float | None = None) -> None:
    """Pause or resume a schedule (resuming may set its next fire time); NotFound if unknown."""
    changes: dict[str, Any] = {"paused": paused}
    if next_fire_at is not None:
        changes["next_fire_at"] = next_fire_at
    if not store.registry_update("schedules", changes, key=name):
        raise _not_found(name)


def pause_schedule(store: Store, name: str) -> None:
    set_schedule_paused(store, name, True)


def resume_schedule(store: Store, name: str, now: float) -> None:
    """Resume from the next fire time after now: fire times missed while paused are skipped."""
    for schedule in store.registry_list("schedules", key=name):
        set_schedule_paused(store, name, False, next_fire_time(schedule["cron"], schedule["tz"], now))
        return
    raise _not_found(name)


def due_schedules(store: Store, now: float) -> list[Schedule]:
    """Unpaused schedules whose next fire time has come."""
    return [s for s in list_schedules(store) if not s.paused and s.next_fire_at <= now]


class _SlotTaken(Exception):
    """Another worker fired this slot first: this fire's unit of work is rolled back."""


def fire_schedule(store: Store, name: str, slot: float, next_fire_at: float, job: Job) -> bool:
    """Enqueue ``job`` for the fire slot ``slot`` (the schedule's current next_fire_at) and move
    the schedule on to ``next_fire_at``.

    Of any number of workers firing the same slot, exactly one enqueues the job: the job id is
    derived from the slot, so a second insert is refused. The insert comes before the move, so
    a crash in between (MongoDB: no transaction) leaves the slot due and the next worker's insert
    of the same id is refused: no fire is lost or doubled. On SQL both are one transaction, and a
    fire that loses the move (PostgreSQL: another worker moved the slot on while this one inserted)
    takes its insert back.
    """
    try:
        with store.unit():
            due = store.registry_list("schedules", key=name)
            if not due or due[0]["next_fire_at"] != slot or due[0]["paused"]:
                return False
            try:
                store.insert_job(job)
                inserted = True
            except Conflict:
                inserted = False  # the slot's job exists already, or its unique key is still held
            fired = [Event(events.SCHEDULE_FIRED, job.created_at, job.id, job.queue, job.state, {"schedule": name})]
            moved = store.registry_update(
                "schedules",
                {"next_fire_at": next_fire_at, "last_fire_at": slot},
                key=name,
                expect={"next_fire_at": slot},
                events=fired if inserted else (),
            )
            if inserted and not moved and store.transactional:
                raise _SlotTaken
    except _SlotTaken:
        return False
    if inserted:
        store.notify()
    return inserted and bool(moved)


def fire_due_schedules(store: Store, now: float) -> list[str]:
    """Enqueue one job per due schedule. Safe to call from every worker at once.

    A schedule fires for the slot at its ``next_fire_at`` and moves on to the first fire time
    after *now*: fire times missed while nothing ran collapse into that one catch-up job.
    """
    fired: list[str] = []
    due = due_schedules(store, now)
    if not due:
        return fired
    config = load_config(store)
    for schedule in due:
        slot = schedule.next_fire_at
        try:  # one broken schedule must not stop the others
            following = next_fire_time(schedule.cron, schedule.tz, max(now, slot))
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(slot))
            job = build_job({**schedule.spec, "id": f"{schedule.name}-{stamp}"}, config, now)
        except InvalidInput:
            continue
        job.schedule = schedule.name
        if fire_schedule(store, schedule.name, slot, following, job):
            fired.append(job.id)
    return fired
