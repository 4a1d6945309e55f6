"""The JSON shapes of jobs, queues, workers, the status and the config: one function each.

Every front end that prints JSON (``--json`` of the CLI, the HTTP API) builds its objects here, so
a job looks the same wherever it is read. Like gh and kubectl, times are RFC 3339 strings in UTC
with milliseconds (``"2026-12-01T09:12:17.123Z"``), durations stay seconds (numbers), and a list
view leaves out what only one job's page needs (its output tail: up to 64 KiB per job).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from queuectl.core.config import CONFIG_KEYS, RuntimeConfig
from queuectl.core.errors import InvalidInput
from queuectl.core.models import STATES, WAITING, Attempt, Job, Schedule, WorkerInfo
from queuectl.service.queues import QueueRow
from queuectl.service.workers import ENDED, worker_is_alive

JOB_TIMES = ("run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at", "progress_at")
ATTEMPT_TIMES = ("claimed_at", "started_at", "ended_at")
WORKER_TIMES = ("started_at", "last_heartbeat")
SCHEDULE_TIMES = ("next_fire_at", "last_fire_at", "created_at")
UNRESPONSIVE = "unresponsive"


def rfc3339(epoch: float | None) -> str | None:
    """``2026-12-01T09:12:17.123Z`` (None stays None)."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _with_times(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    for name in names:
        if name in data:
            data[name] = rfc3339(data[name])
    return data


def job_json(
    job: Job, with_output: bool = True, attempts: list[Attempt] | None = None, *, waits: Mapping[str, list[str]]
) -> dict[str, Any]:
    """One job, with its latest ``progress`` (percent, message, ETA: None if it reported none);
    ``with_output=False`` for list views (the output tail is for ``show`` and ``logs``); with
    ``attempts`` (``show``), its ``history``, one entry per attempt. A waiting job has
    ``waits_for``, the parents it still waits for: ``waits`` is :func:`service.deps.waits_for`
    of the jobs being shown (one read for a whole page), a required argument so that no front end
    gives a job without it (``show`` and the API once did)."""
    from queuectl.service import history

    data = _with_times(job.to_dict(), JOB_TIMES)
    progress = history.progress_of(job)
    data["progress"] = progress.to_dict() if progress else None
    if job.state == WAITING:
        data["waits_for"] = list(waits[job.id])
    if not with_output:
        del data["output"]
    if attempts is not None:
        data["history"] = [history.attempt_dict(row) for row in attempts]
    return data


def jobs_json(jobs: list[Job], waits: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """A list view of jobs: each one as :func:`job_json` without its output."""
    return [job_json(job, with_output=False, waits=waits) for job in jobs]


def worker_liveness(worker: WorkerInfo, config: RuntimeConfig, now: float) -> str:
    """The state to show: the registered one (``dead`` once its supervisor saw it die), or
    ``unresponsive`` for a worker silent for a whole lease that never said it stopped."""
    if worker.state in ENDED:
        return worker.state  # stopped, or dead: its supervisor saw it die
    return worker.state if worker_is_alive(worker.last_heartbeat, worker.state, config, now) else UNRESPONSIVE


def worker_json(worker: WorkerInfo, config: RuntimeConfig, now: float) -> dict[str, Any]:
    """One worker, with the liveness the table shows: ``state`` is running, stopping, stopped or
    unresponsive; ``alive`` says whether it still counts."""
    data = _with_times(worker.to_dict(), WORKER_TIMES)
    data["state"] = worker_liveness(worker, config, now)
    data["alive"] = worker_is_alive(worker.last_heartbeat, worker.state, config, now)
    data["heartbeat_age"] = round(max(0.0, now - worker.last_heartbeat), 3)
    return data


def queue_json(row: QueueRow) -> dict[str, Any]:
    """One queue: every state (zeros included), its total, whether it is paused, and its limit
    and rate when it has them (``queue limit``, ``queue rate``)."""
    counts = {state: int(row.states.get(state, 0)) for state in STATES}
    data: dict[str, Any] = {"name": row.name, "paused": row.paused, "states": counts, "total": sum(counts.values())}
    if row.limit is not None:
        data["limit"] = row.limit
    if row.rate is not None:
        data["rate"] = row.rate
    return data


def status_json(
    rows: list[QueueRow],
    workers_alive: int,
    workers_total: int,
    autoscaling: Iterable[tuple[str, str, int]] = (),
) -> dict[str, Any]:
    """``queuectl status``: totals per state (zeros included) and in all, every queue (as ``queue
    list --json`` shows it), workers."""
    totals = {state: 0 for state in STATES}
    for row in rows:
        for state, count in row.states.items():
            totals[state] = totals.get(state, 0) + count
    return {
        "states": totals,
        "total": sum(totals.values()),
        "queues": [queue_json(row) for row in rows],
        "paused": sorted(row.name for row in rows if row.paused),
        "workers": {
            "alive": workers_alive,
            "registered": workers_total,
            "autoscaling": [{"host": host, "scale": scale, "alive": alive} for host, scale, alive in autoscaling],
        },
    }


def config_value(key: str, value: str) -> int | float:
    """A stored setting as a number: whole numbers as integers, others as floats (a value written
    into the database by hand that does not parse reads as the default, as workers read it)."""
    try:
        parsed = CONFIG_KEYS[key].parse(value)
    except InvalidInput:
        parsed = CONFIG_KEYS[key].parse(CONFIG_KEYS[key].default)
    return int(parsed) if float(parsed).is_integer() else float(parsed)


def config_json(database: str, items: list[tuple[str, str, bool, str]]) -> dict[str, Any]:
    """The (redacted) database URL and every setting by name, as a number."""
    return {"database": database, **{name: config_value(name, value) for name, value, _, _ in items}}


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return _with_times(schedule.to_dict(), SCHEDULE_TIMES)
