"""Read models of the whole queue, computed once for every front end: totals per state, worker
liveness, lag. The CLI's ``status``, the dashboard and the metrics all read these."""

from __future__ import annotations

from dataclasses import dataclass, field

from queuectl.core.config import RuntimeConfig
from queuectl.core.lifecycle import CLAIMABLE
from queuectl.core.models import STATES, WorkerInfo
from queuectl.service.config import load_config
from queuectl.service.queues import QueueRow, list_queues, paused_queues
from queuectl.service.workers import list_workers, worker_is_alive
from queuectl.store import Store


def state_totals(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Totals per state over every queue; every known state is present (zeros included)."""
    totals = {state: 0 for state in STATES}
    for per_state in counts.values():
        for state, count in per_state.items():
            totals[state] = totals.get(state, 0) + count
    return totals


def alive_workers(workers: list[WorkerInfo], config: RuntimeConfig, now: float) -> list[WorkerInfo]:
    return [w for w in workers if worker_is_alive(w.last_heartbeat, w.state, config, now)]


def next_due(store: Store, counts: dict[str, dict[str, int]], paused: set[str]) -> float | None:
    """The earliest ``run_at`` of a claimable job in a queue that is not paused (None: none).

    Without paused queues that is one ``next_due(None)``; with some, the queues that hold
    claimable jobs (known from ``counts``) are asked, so that a paused backlog is not lag.
    """
    if not paused:
        return store.next_due(None)
    ready = sorted(
        queue for queue, per_state in counts.items() if queue not in paused and any(per_state.get(s) for s in CLAIMABLE)
    )
    return store.next_due(ready) if ready else None  # next_due([]) would mean every queue


def served_lag(store: Store, queues: list[str] | None, now: float) -> float | None:
    """How long the oldest due, unclaimed job of ``queues`` (None: every queue) has waited, paused
    queues left out; what an autoscaling supervisor grows on. Indexed reads only."""
    paused = paused_queues(store)
    if queues is None:
        due = next_due(store, store.counts() if paused else {}, paused)
    else:
        ready = [queue for queue in queues if queue not in paused]
        due = store.next_due(ready) if ready else None
    return lag(due, now)


def lag(due: float | None, now: float) -> float | None:
    """How long the oldest due, unclaimed job has waited (None: nothing is due)."""
    return now - due if due is not None and due <= now else None


@dataclass
class Status:
    """What ``queuectl status`` shows."""

    rows: list[QueueRow]  # every queue with its counts, pause, limit and rate (queue list's rows)
    workers_alive: int
    workers_total: int
    autoscaling: list[tuple[str, str, int]] = field(default_factory=list)  # (host, "min..max", alive)

    @property
    def queues(self) -> dict[str, dict[str, int]]:
        """Jobs per state of each queue that holds any."""
        return {row.name: row.states for row in self.rows if row.states}

    @property
    def paused(self) -> set[str]:
        return {row.name for row in self.rows if row.paused}

    @property
    def states(self) -> dict[str, int]:
        """Jobs per state over every queue."""
        return state_totals(self.queues)


def status(store: Store, now: float) -> Status:
    rows = list_queues(store)  # the counters and the queue records: two small reads
    workers, alive = _workers(store, now)
    scaling = autoscaling(alive_workers(workers, load_config(store), now))
    return Status(rows, alive, len(workers), scaling)


def autoscaling(alive: list[WorkerInfo]) -> list[tuple[str, str, int]]:
    """``(host, "min..max", workers alive)`` for each autoscaling range its alive workers carry."""
    groups: dict[tuple[str, str], int] = {}
    for worker in alive:
        if worker.scale:
            groups[(worker.host, worker.scale)] = groups.get((worker.host, worker.scale), 0) + 1
    return [(host, scale, count) for (host, scale), count in sorted(groups.items())]


def _workers(store: Store, now: float) -> tuple[list[WorkerInfo], int]:
    """Every registered worker, and how many of them are alive."""
    workers = list_workers(store)
    return workers, len(alive_workers(workers, load_config(store), now))


@dataclass
class Reading:
    """One consistent read for a metrics scrape."""

    counts: dict[str, dict[str, int]]
    totals: dict[str, int]
    workers_alive: int
    lag: float | None
    completed: int
    durations: float


def metrics_reading(store: Store, now: float) -> Reading:
    counts = store.counts()
    _, alive = _workers(store, now)
    due = next_due(store, counts, paused_queues(store))
    completed, durations = store.duration_totals()
    return Reading(counts, state_totals(counts), alive, lag(due, now), completed, durations)
