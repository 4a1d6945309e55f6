"""Workflow rules beyond single jobs: cron schedules, on-finish hooks, retention, waiting on jobs.

Like ``service``, no database details and no Typer; croniter and zoneinfo are imported only
when a schedule is used.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from queuectl.core.config import RuntimeConfig
from queuectl.core.errors import InvalidInput
from queuectl.core.models import CANCELLED, COMPLETED, DEAD, FINISHED, Job, Schedule
from queuectl.runtime.executor import job_environment
from queuectl.service import jobs as service
from queuectl.store import Store

RETENTION_BATCH = 1000  # rows per transaction: a big purge never holds the write lock for long
_SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")  # + "-YYYYmmddTHHMMSS" fits a job id


# --- cron schedules -----------------------------------------------------------------------------


def _zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {tz!r}; use an IANA name like Europe/Berlin or UTC") from None


def next_fire_time(cron: str, tz: str, after: float) -> float:
    """The first fire time strictly after ``after``, computed in the schedule's timezone (DST-aware)."""
    from croniter import croniter

    zone = _zone(tz)
    try:
        return float(croniter(cron, datetime.fromtimestamp(after, zone)).get_next(float))
    except (ValueError, KeyError, ArithmeticError) as exc:  # CroniterBadDateError is a ValueError
        raise InvalidInput(f"invalid cron expression {cron!r}: {exc}") from None


def add_schedule(store: Store, name: str, cron: str, spec: dict[str, Any], tz: str, now: float) -> Schedule:
    """Validate and store a schedule; its job spec is checked now, not at the first fire."""
    if not _SCHEDULE_NAME.match(name):
        raise InvalidInput(
            f"invalid schedule name {name!r}: use 1-48 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if spec.get("id") or spec.get("after") or spec.get("on_failure_of") or spec.get("delay") or spec.get("run_at"):
        raise InvalidInput("a schedule's job cannot have an id, parents, delay or run_at")
    service.build_job(spec, service.load_config(store), now)  # raises on a bad spec
    schedule = Schedule(name=name, cron=cron, tz=tz, spec=spec,
                        next_fire_at=next_fire_time(cron, tz, now), created_at=now)
    store.add_schedule(schedule)
    return schedule


def resume_schedule(store: Store, name: str, now: float) -> None:
    """Resume from the next fire time after now: fire times missed while paused are skipped."""
    for schedule in store.list_schedules():
        if schedule.name == name:
            store.set_schedule_paused(name, False, next_fire_time(schedule.cron, schedule.tz, now))
            return
    store.set_schedule_paused(name, False)  # raises NotFound


def fire_due_schedules(store: Store, now: float) -> list[str]:
    """Enqueue one job per due schedule. Safe to call from every worker at once.

    A schedule fires for the slot at its ``next_fire_at`` and moves on to the first fire time
    after *now*: fire times missed while nothing ran collapse into that one catch-up job. The
    job id is derived from the slot, so even a lost race could not insert it twice.
    """
    fired: list[str] = []
    due = store.due_schedules(now)
    if not due:
        return fired
    config = service.load_config(store)
    for schedule in due:
        slot = schedule.next_fire_at
        try:  # one broken schedule must not stop the others
            following = next_fire_time(schedule.cron, schedule.tz, max(now, slot))
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(slot))
            job = service.build_job({**schedule.spec, "id": f"{schedule.name}-{stamp}"}, config, now)
        except InvalidInput:
            continue
        job.schedule = schedule.name
        if store.fire_schedule(schedule.name, slot, following, job):
            fired.append(job.id)
    return fired


# --- on-finish hooks ----------------------------------------------------------------------------


def run_hook(job: Job, config: RuntimeConfig, base_env: dict[str, str]) -> str | None:
    """Run a finished job's hook with its outcome in the environment; returns an error or None.

    A hook never changes the job's outcome and never raises: its failure is recorded on the job.
    """
    assert job.on_finish is not None
    env = job_environment(base_env, job.env)
    env.update({
        "QUEUECTL_JOB_ID": job.id,
        "QUEUECTL_JOB_STATE": job.state,
        "QUEUECTL_EXIT_CODE": "" if job.exit_code is None else str(job.exit_code),
        "QUEUECTL_JOB_COMMAND": job.command,
    })
    cwd = job.cwd if job.cwd and os.path.isdir(job.cwd) else None
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: a background child can't hold it open
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", job.on_finish], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:
            return f"hook could not start: {exc.strerror}"
        try:
            code = proc.wait(timeout=config.hook_timeout)
            error = None
        except subprocess.TimeoutExpired:
            error = f"hook timed out after {config.hook_timeout:g}s"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the hook's whole process group ends with it
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        if error:
            return error
        if code != 0:
            output.seek(max(0, output.seek(0, os.SEEK_END) - 4096))
            tail = output.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            return f"hook exited with {code}: {tail[0][:200]}"
    return None


# --- retention ----------------------------------------------------------------------------------


def purge(
    store: Store, states: list[str], older_than: float | None, now: float, dry_run: bool = False,
    max_batches: int | None = None,
) -> int:
    """Delete finished jobs by state and age, in batches (at most ``max_batches``); ``dry_run`` counts."""
    for state in states:
        service.check_state(state)
        if state not in FINISHED:
            raise InvalidInput(f"cannot purge {state} jobs: only {', '.join(FINISHED)} jobs can be purged")
    before = None if older_than is None else now - older_than
    if dry_run:
        return store.count_purgeable(states, before)
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        deleted = store.purge(states, before, limit=RETENTION_BATCH)
        total += deleted
        batches += 1
        if deleted < RETENTION_BATCH:
            break
    return total


def apply_retention(store: Store, config: RuntimeConfig, now: float, max_batches: int | None = None) -> int:
    """The automatic purge workers run now and then, per the retain-* config keys."""
    deleted = 0
    if config.retain_completed > 0:
        deleted += purge(store, [COMPLETED], config.retain_completed, now, max_batches=max_batches)
    if config.retain_dead > 0:
        deleted += purge(store, [DEAD, CANCELLED], config.retain_dead, now, max_batches=max_batches)
    return deleted


# --- waiting for jobs ---------------------------------------------------------------------------


@dataclass
class WaitResult:
    jobs: list[Job]
    timed_out: bool


def wait_for(
    store: Store, job_ids: list[str], timeout: float | None,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
) -> WaitResult:
    """Block until every job is finished (or the timeout passes), polling with a growing interval."""
    for job_id in job_ids:
        service.get_job(store, job_id)  # unknown ids fail at once
    deadline = None if timeout is None else clock() + timeout
    interval = 0.05
    while True:
        jobs = [service.get_job(store, job_id) for job_id in job_ids]
        if all(job.state in FINISHED for job in jobs):
            return WaitResult(jobs, False)
        if deadline is not None and clock() >= deadline:
            return WaitResult(jobs, True)
        pause = interval if deadline is None else min(interval, max(0.0, deadline - clock()))
        sleep(pause)
        interval = min(interval * 1.5, 1.0)
