"""A SIGKILLed worker stays in the registry, shown dead, for FORGET_WORKERS_AFTER_S: its
replacement's start-up prune used to forget it at once, so ``worker list`` raced the restart
(the flaky integration test ``test_a_sigkilled_worker_is_shown_dead_at_once``)."""

from __future__ import annotations

from queuectl.core.defaults import FORGET_WORKERS_AFTER_S
from queuectl.core.models import WorkerInfo
from queuectl.service import workers as registry
from queuectl.store.base import Store

HOST = "box"


def row(worker_id: str, pid: int, at: float, state: str = "running") -> WorkerInfo:
    return WorkerInfo(id=worker_id, host=HOST, pid=pid, state=state, started_at=at, last_heartbeat=at)


def test_a_killed_worker_is_still_listed_dead_after_its_replacement_starts(store: Store) -> None:
    # Given a worker its supervisor just saw die (SIGKILL)
    now = store.now()
    registry.register_worker(store, row("w-killed", 41, now - 5))
    registry.mark_dead(store, HOST, 41)
    # When its replacement starts and prunes the registry as every worker does at start-up
    registry.prune_workers(store, seen_before=store.now() - FORGET_WORKERS_AFTER_S)
    # Then `worker list` still shows the killed worker, dead
    shown, _ = registry.worker_list(store)
    assert [(w.id, w.state) for w in shown] == [("w-killed", "dead")]
