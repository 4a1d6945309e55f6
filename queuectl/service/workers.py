"""The worker registry: workers register, beat, are asked to stop, and are forgotten.

Liveness (alive or unresponsive) is decided once, in :func:`worker_is_alive`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

from queuectl.core.config import RuntimeConfig
from queuectl.core.defaults import DEAD_STOPPABLE_S
from queuectl.core.lifecycle import events
from queuectl.core.models import WorkerInfo
from queuectl.service.config import load_config
from queuectl.store import Store

RUNNING, STOPPING, STOPPED = "running", "stopping", "stopped"
DEAD = "dead"  # its supervisor saw it die (SIGKILL, a crash): no need to wait out the lease
ENDED = (STOPPED, DEAD)


def worker_is_alive(last_heartbeat: float, state: str, config: RuntimeConfig, now: float) -> bool:
    """A worker counts as alive until it stops, its supervisor saw it die, or it misses its
    heartbeats for a whole lease."""
    return state not in ENDED and now - last_heartbeat <= config.lease


def register_worker(store: Store, info: WorkerInfo) -> None:
    """Add (or replace) a worker in the registry."""
    started = events.worker_event(events.WORKER_STARTED, info.id, info.started_at, host=info.host, pid=info.pid)
    store.registry_put("workers", info.id, asdict(info), events=[started])


def beat_worker(
    store: Store, worker_id: str, now: float, state: str, current_jobs: list[str], info: WorkerInfo | None = None
) -> bool:
    """Record a worker's heartbeat and current jobs; returns True if it was asked to stop.

    A record pruned meanwhile (another host took this worker for dead) is created again from
    ``info``, so the worker stays visible and can still be stopped through the database."""
    changes = {"last_heartbeat": now, "state": state, "current_jobs": current_jobs}
    logged = [events.worker_event(events.WORKER_STOPPED, worker_id, now)] if state == STOPPED else []
    if not store.registry_update("workers", changes, key=worker_id, events=logged) and info is not None:
        store.registry_put("workers", worker_id, {**asdict(info), **changes}, replace=False)
    records = store.registry_list("workers", key=worker_id)
    return bool(records and records[0]["stop_requested"])


def show_current_jobs(store: Store, worker_id: str, current_jobs: list[str]) -> None:
    """Update a worker's list of running jobs between heartbeats (as soon as it claims or ends
    one), so that its row never lags its jobs by a heartbeat."""
    store.registry_update(
        "workers", {"current_jobs": current_jobs}, key=worker_id, expect={"state": (RUNNING, STOPPING)}
    )


def mark_dead(store: Store, worker_id: str) -> bool:
    """Mark the registry row of ``worker_id`` dead (its supervisor saw it die), unless it stopped
    cleanly; returns whether it was marked. Its jobs come back when their leases end.

    By id, not by host and pid: a dead row stays for an hour, and a pid is soon reused (pid 1 in
    every container). Its ``last_heartbeat`` becomes the time of its death, its last sign of life:
    it is kept an hour from then, and asked to stop only while its supervisor may restart it."""
    changes = {"state": DEAD, "last_heartbeat": store.now()}
    return bool(store.registry_update("workers", changes, key=worker_id, expect={"state": (RUNNING, STOPPING)}))


def list_workers(store: Store) -> list[WorkerInfo]:
    """Every registered worker, newest first."""
    workers = [WorkerInfo(**record) for record in store.registry_list("workers")]
    return sorted(workers, key=lambda w: w.started_at, reverse=True)


def request_stop(store: Store, worker_ids: list[str] | None = None) -> int:
    """Ask running workers (all, or the given ones) to stop gracefully; returns how many.

    A worker that died in the last ``DEAD_STOPPABLE_S`` is asked too: its supervisor, waiting to
    restart it, reads the request on its row and does not restart it. An older dead row is not
    asked nor counted: nobody reads it any more (it is only kept to be shown)."""
    asked = 0
    keys: list[str | None] = list(worker_ids) if worker_ids else [None]  # None: every worker
    for key in keys:
        asked += store.registry_update(
            "workers", {"stop_requested": True}, key=key, expect={"state": (RUNNING, STOPPING)}
        )
    died_after = store.now() - DEAD_STOPPABLE_S
    for worker in list_workers(store):
        if worker.state == DEAD and worker.last_heartbeat >= died_after and (not worker_ids or worker.id in worker_ids):
            asked += store.registry_update("workers", {"stop_requested": True}, key=worker.id, expect={"state": DEAD})
    store.notify(stop=True)
    return asked


def prune_workers(store: Store, seen_before: float) -> int:
    """Forget workers that stopped cleanly, and the others (dead or silent) not seen since
    ``seen_before``: a worker that died stays visible (dead, red) until then, even though its
    replacement prunes as it starts (it used to forget it at once: ``worker list`` raced the
    restart). No lookup mistakes a lingering dead row for a live worker: the supervisor and the
    autoscaler find their workers' rows by id, and ``request_stop`` skips old dead rows."""
    forgotten = 0
    for worker in list_workers(store):
        if worker.state == STOPPED or worker.last_heartbeat < seen_before:
            # compare-and-delete: a worker that beat meanwhile stays
            forgotten += store.registry_delete("workers", worker.id, expect={"last_heartbeat": worker.last_heartbeat})
    return forgotten


def wait_for_workers_to_stop(store: Store, timeout: float, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Poll the registry until no worker is alive; False if some still are after ``timeout``."""
    config = load_config(store)
    deadline = time.monotonic() + timeout
    while True:
        now = store.now()
        if not any(worker_is_alive(w.last_heartbeat, w.state, config, now) for w in list_workers(store)):
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(0.2)


def stop_workers(store: Store, wait: bool, timeout: float) -> tuple[int, bool]:
    """Ask every worker to stop; with ``wait``, also wait. Returns (asked, all stopped in time)."""
    asked = request_stop(store)
    if not wait or not asked:
        return asked, True
    return asked, wait_for_workers_to_stop(store, timeout)


def worker_list(store: Store, include_stopped: bool = False) -> tuple[list[WorkerInfo], RuntimeConfig]:
    """The workers to show (stopped ones only when asked), and the config that judges their liveness."""
    workers = [w for w in list_workers(store) if include_stopped or w.state != STOPPED]
    return workers, load_config(store)


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process holds that pid now: not ours to judge
    return True


def retire_stale_workers(store: Store, host: str | None = None) -> list[WorkerInfo]:
    """Workers registered on ``host`` as running whose process is gone (their supervisor was
    killed, the machine rebooted). They are marked stopped and returned, so that a new
    ``worker start`` can say so; their jobs come back when their leases expire. ``host``: this
    machine's name unless given."""
    if host is None:
        import socket

        host = socket.gethostname()
    stale = [w for w in list_workers(store) if w.host == host and w.state not in ENDED and not _pid_alive(w.pid)]
    for worker in stale:
        store.registry_update(
            "workers", {"state": STOPPED}, key=worker.id, expect={"last_heartbeat": worker.last_heartbeat}
        )
    return stale
