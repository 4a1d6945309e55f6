"""The dashboard's data: one snapshot of the queue per refresh, and a short history of them.

Pure data, no Rich: :func:`collect` reads the store only through the cheap, indexed contract
methods (counts, throughput, recent_failures, next_due, list_workers, and one ``get`` per running
job of a live worker, bounded), so a refresh costs about the same on ten jobs as on a million.
Rendering lives in :mod:`queuectl.cli.dashboard_view`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from queuectl.core.defaults import FAILURES_SHOWN, HISTORY_WINDOW_S, MAX_JOB_LOOKUPS
from queuectl.core.defaults import THROUGHPUT_BUCKET_S as BUCKET_S
from queuectl.core.defaults import THROUGHPUT_BUCKETS as BUCKETS
from queuectl.core.models import DEAD, PROCESSING
from queuectl.service import observe
from queuectl.service.config import load_config
from queuectl.service.history import progress_of
from queuectl.service.queues import paused_queues
from queuectl.service.workers import DEAD as DEAD_WORKER
from queuectl.service.workers import list_workers, worker_is_alive
from queuectl.store import Store

GONE_AFTER_S = 600.0  # a worker silent this long is long past its lease: counted, not listed


@dataclass
class RunningJob:
    """A job a worker reports as current; ``running_for`` is None when it is not (or no longer) its job."""

    id: str
    command: str | None = None
    running_for: float | None = None
    elsewhere: str | None = None  # why it is not running here: its state, "gone" or "taken over"
    progress: str | None = None  # its latest report, as `list` shows it: 40% resizing (ETA 12s)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class WorkerRow:
    id: str
    host: str
    pid: int
    state: str  # running | stopping (stopped workers are only counted)
    queues: str
    concurrency: int
    heartbeat_age: float
    unresponsive: bool  # not stopped, yet silent for longer than the lease
    jobs: list[RunningJob] = field(default_factory=list)


@dataclass
class Failure:
    id: str
    state: str  # failed (a retry is scheduled) or dead
    queue: str
    attempts: int
    max_attempts: int
    age: float  # seconds since the failure was recorded
    error: str  # the first line of the last error
    command: str
    retry_in: float | None = None  # failed jobs: seconds until the retry is due
    last_output: str = ""  # the last line the job printed, often the actual complaint
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Snapshot:
    """Everything the dashboard shows, read at time ``at``."""

    at: float
    states: dict[str, int]  # totals per state; every known state is present
    queues: dict[str, dict[str, int]]  # per queue and state
    paused: list[str]
    completed_per_bucket: list[int]  # oldest first; the last is the current, partial minute
    failed_per_bucket: list[int]
    lag: float | None  # age of the oldest job that is due but not claimed; None: nothing is due
    next_due_in: float | None  # when nothing is due: seconds until the next delayed job
    workers: list[WorkerRow]  # not stopped, newest first
    workers_stopped: int
    failures: list[Failure]
    lease: float
    elapsed: float = 0.0  # seconds the reads took
    workers_gone: int = 0  # dead, or silent for over GONE_AFTER_S: counted, not listed

    @property
    def dlq(self) -> int:
        return self.states.get(DEAD, 0)

    @property
    def workers_alive(self) -> int:
        return sum(1 for worker in self.workers if not worker.unresponsive)

    @property
    def workers_unresponsive(self) -> int:
        """Listed unresponsive workers and the gone ones (counted only)."""
        return sum(1 for worker in self.workers if worker.unresponsive) + self.workers_gone


def first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def last_line(text: str | None) -> str:
    for line in reversed((text or "")[-4096:].splitlines()):
        if line.strip():
            return line.strip()
    return ""


def collect(store: Store, now: float | None = None) -> Snapshot:
    """Read one snapshot. Raises the store's errors (StoreUnavailable...) unchanged."""
    started = time.perf_counter()
    now = store.now() if now is None else now
    queues = store.counts()
    states = observe.state_totals(queues)

    current = int(now // BUCKET_S)
    first = current - BUCKETS + 1
    rates = store.throughput(first * BUCKET_S, BUCKET_S)
    completed = [rates.get("completed", {}).get(b, 0) for b in range(first, current + 1)]
    failed = [rates.get("failed", {}).get(b, 0) for b in range(first, current + 1)]

    paused = paused_queues(store)
    due = observe.next_due(store, queues, paused)
    lag = observe.lag(due, now)
    next_due_in = due - now if due is not None and due > now else None

    config = load_config(store)
    workers: list[WorkerRow] = []
    stopped = gone = 0
    lookups = MAX_JOB_LOOKUPS
    for info in list_workers(store):
        if info.state == "stopped":
            stopped += 1
            continue
        if info.state == DEAD_WORKER or now - info.last_heartbeat > GONE_AFTER_S:
            gone += 1  # its row would stay until it is forgotten, pushing the rest off the screen
            continue
        row = WorkerRow(
            id=info.id,
            host=info.host,
            pid=info.pid,
            state=info.state,
            queues=info.queues,
            concurrency=info.concurrency,
            heartbeat_age=max(0.0, now - info.last_heartbeat),
            unresponsive=not worker_is_alive(info.last_heartbeat, info.state, config, now),
        )
        for job_id in info.current_jobs:
            running = RunningJob(job_id)
            if lookups > 0:
                lookups -= 1
                job = store.get(job_id)
                if job is None:
                    running.elsewhere = "gone"
                else:
                    running.command = job.command
                    running.labels = job.labels
                    if job.state == PROCESSING and job.locked_by == info.id and job.started_at:
                        running.running_for = max(0.0, now - job.started_at)
                        reported = progress_of(job)
                        running.progress = reported.text if reported else None
                    else:
                        running.elsewhere = "taken over" if job.state == PROCESSING else job.state
            row.jobs.append(running)
        workers.append(row)

    failures = [
        Failure(
            id=job.id,
            state=job.state,
            queue=job.queue,
            attempts=job.attempts,
            max_attempts=job.max_retries + 1,
            age=max(0.0, now - job.updated_at),
            error=first_line(job.last_error),
            command=first_line(job.command),
            retry_in=(job.run_at - now) if job.state != DEAD and job.run_at > now else None,
            last_output=last_line(job.output),
            labels=job.labels,
        )
        for job in store.recent_failures(FAILURES_SHOWN)
    ]
    return Snapshot(
        at=now,
        states=states,
        queues=queues,
        paused=sorted(paused),
        completed_per_bucket=completed,
        failed_per_bucket=failed,
        lag=lag,
        next_due_in=next_due_in,
        workers=workers,
        workers_stopped=stopped,
        workers_gone=gone,
        failures=failures,
        lease=config.lease,
        elapsed=time.perf_counter() - started,
    )


class History:
    """The state totals of recent snapshots, to show how each count moved over the last minute."""

    def __init__(self, window: float = HISTORY_WINDOW_S) -> None:
        self.window = window
        self._points: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, snapshot: Snapshot) -> None:
        self._points.append((snapshot.at, dict(snapshot.states)))
        # keep one point at or before the window's start: the baseline for the change
        while len(self._points) > 1 and self._points[1][0] <= snapshot.at - self.window:
            self._points.popleft()

    def change(self, snapshot: Snapshot) -> tuple[dict[str, int], float] | None:
        """``(count now - count then, seconds between)`` against the oldest point of the window.

        None until there is an earlier snapshot to compare with.
        """
        if not self._points or self._points[0][0] >= snapshot.at:
            return None
        at, then = self._points[0]
        keys = set(snapshot.states) | set(then)
        return {key: snapshot.states.get(key, 0) - then.get(key, 0) for key in keys}, snapshot.at - at

    def __len__(self) -> int:
        return len(self._points)


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int], scale: int | None = None) -> str:
    """One block per value: zero is the lowest block, any other value at least the second lowest."""
    top = max(scale or 0, max(values, default=0))
    if top <= 0:
        return SPARK_BLOCKS[0] * len(values)
    out = []
    for value in values:
        if value <= 0:
            out.append(SPARK_BLOCKS[0])
        else:
            level = 1 + round((len(SPARK_BLOCKS) - 2) * value / top)
            out.append(SPARK_BLOCKS[min(level, len(SPARK_BLOCKS) - 1)])
    return "".join(out)
