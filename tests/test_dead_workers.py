"""A SIGKILLed worker stays in the registry, shown dead, for FORGET_WORKERS_AFTER_S: its
replacement's start-up prune used to forget it at once, so ``worker list`` raced the restart
(the flaky integration test ``test_a_sigkilled_worker_is_shown_dead_at_once``).

A dead row that lingers must not mislead the lookups that used to find rows by host and pid, nor
``worker stop``'s count: after a pid is reused (pid 1 in containers, small pid namespaces) a new
worker of ours has the pid of an old dead row, with that row's stop request and current jobs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from queuectl.core.defaults import DEAD_STOPPABLE_S, FORGET_WORKERS_AFTER_S
from queuectl.core.models import WorkerInfo
from queuectl.runtime.autoscale import read_load
from queuectl.runtime.supervisor import Supervisor, WorkerProcess
from queuectl.service import workers as registry
from queuectl.store.base import Store
from queuectl.store.sql.sqlite import SqliteStore

HOST = socket.gethostname()  # the supervisor and the autoscaler look at this host's rows
PID = 4242  # an old dead worker's pid, reused by a new worker


def row(worker_id: str, pid: int, at: float, state: str = "running", **fields: Any) -> WorkerInfo:
    return WorkerInfo(id=worker_id, host=HOST, pid=pid, state=state, started_at=at, last_heartbeat=at, **fields)


def a_lingering_dead_row(store: Store, **fields: Any) -> WorkerInfo:
    """A worker of ``PID`` that died long enough ago that nobody restarts it any more, but is
    still shown (past ``DEAD_STOPPABLE_S``, well before ``FORGET_WORKERS_AFTER_S``)."""
    old = row("w4242-old", PID, store.now() - DEAD_STOPPABLE_S - 600, state="dead", **fields)
    registry.register_worker(store, old)
    return old


def test_a_killed_worker_is_still_listed_dead_after_its_replacement_starts(store: Store) -> None:
    # Given a worker its supervisor just saw die (SIGKILL)
    now = store.now()
    registry.register_worker(store, row("w-killed", 41, now - 5))
    assert registry.mark_dead(store, "w-killed")
    # When its replacement starts and prunes the registry as every worker does at start-up
    registry.prune_workers(store, seen_before=store.now() - FORGET_WORKERS_AFTER_S)
    # Then `worker list` still shows the killed worker, dead
    shown, _ = registry.worker_list(store)
    assert [(w.id, w.state) for w in shown] == [("w-killed", "dead")]


def test_a_dead_worker_is_forgotten_once_it_died_longer_ago_than_the_prune_keeps_it(store: Store) -> None:
    now = store.now()
    registry.register_worker(store, row("w-long-dead", 40, now - FORGET_WORKERS_AFTER_S - 60, state="dead"))
    registry.register_worker(store, row("w-stopped", 41, now, state="stopped"))  # a clean stop: at once, as before
    registry.register_worker(store, row("w-dead", 42, now - FORGET_WORKERS_AFTER_S + 60, state="dead"))

    assert registry.prune_workers(store, seen_before=now - FORGET_WORKERS_AFTER_S) == 2

    assert [w.id for w in registry.list_workers(store)] == ["w-dead"]


def test_mark_dead_marks_the_worker_by_id_not_a_row_with_its_host_and_pid(store: Store) -> None:
    # Given two live workers with the same host and pid (two containers with the host's name)
    now = store.now()
    registry.register_worker(store, row("w4242-theirs", PID, now - 10))
    registry.register_worker(store, row("w4242-ours", PID, now - 5))
    # When our supervisor sees ours die
    assert registry.mark_dead(store, "w4242-ours")
    # Then only ours is dead, and the time it died is its last sign of life
    states = {w.id: (w.state, w.last_heartbeat >= now) for w in registry.list_workers(store)}
    assert states == {"w4242-ours": ("dead", True), "w4242-theirs": ("running", False)}
    assert not registry.mark_dead(store, "w4242-ours")  # dead already
    registry.register_worker(store, row("w-clean", 7, now, state="stopped"))
    assert not registry.mark_dead(store, "w-clean")  # it stopped cleanly: not dead


def test_worker_stop_asks_a_worker_that_just_died_but_not_a_lingering_dead_row(store: Store) -> None:
    old = a_lingering_dead_row(store)
    registry.register_worker(store, row("w4242-new", PID, store.now() - 5))
    registry.register_worker(store, row("w-live", 43, store.now() - 5))
    assert registry.mark_dead(store, "w4242-new")  # its supervisor may restart it: it must hear of a stop

    assert registry.request_stop(store) == 2
    asked = {w.id: w.stop_requested for w in registry.list_workers(store)}
    assert asked == {"w4242-new": True, "w-live": True, old.id: False}
    assert registry.request_stop(store, [old.id]) == 0  # by id neither: nobody would read it
    assert registry.request_stop(store, ["w4242-new", old.id]) == 1


def test_worker_stop_reports_the_workers_that_can_act_on_it(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    try:
        a_lingering_dead_row(store)
        registry.register_worker(store, row("w4242-live", PID, store.now()))
    finally:
        store.close()
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    stop = subprocess.run(
        [sys.executable, "-m", "queuectl", "--db", f"sqlite:///{tmp_path / 'q.db'}", "worker", "stop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (stop.returncode, stop.stdout) == (0, "asked 1 worker(s) to stop; running jobs finish first\n"), stop


def supervisor_of(tmp_path: Path) -> tuple[Supervisor, SqliteStore]:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    return Supervisor(url, 1, None, 1), SqliteStore(str(tmp_path / "q.db"))


def died(sup: Supervisor, worker_id: str, pid: int = PID) -> None:
    """What the supervisor's reaper does with a worker that died: mark its row, plan its restart."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    proc.pid = pid  # the pid the dead worker had
    sup._mark_dead(WorkerProcess(0, proc, time.monotonic(), worker_id))
    sup.restart_at[0] = time.monotonic() + 60
    sup.dead_id[0] = worker_id


def test_the_supervisor_restarts_a_worker_despite_an_old_dead_row_with_its_pid_and_a_stop_request(
    tmp_path: Path,
) -> None:
    # Given an old dead row, asked to stop back then, and our worker with the same pid, just died
    sup, store = supervisor_of(tmp_path)
    try:
        old = a_lingering_dead_row(store, stop_requested=True)
        registry.register_worker(store, row("w4242-new", PID, store.now()))
        died(sup, "w4242-new")
        assert {w.id: w.state for w in registry.list_workers(store)} == {"w4242-new": "dead", old.id: "dead"}
        # When the supervisor looks for a stop request before the restart
        sup._check_stop_requests()
        # Then the old row's request is not ours: the restart stays planned
        assert 0 in sup.restart_at and not sup.stop_requested
        # But a stop asked now, on our dead worker's row, drops it, and says it stopped for it
        assert registry.request_stop(store) == 1
        sup._next_stop_check = 0.0
        sup._check_stop_requests()
        assert sup.restart_at == {} and sup.stop_requested
        assert {w.id: w.state for w in registry.list_workers(store)} == {"w4242-new": "stopped", old.id: "dead"}
    finally:
        sup._store and sup._store.close()
        store.close()


def test_the_autoscaler_reads_the_jobs_of_our_worker_not_of_an_old_dead_row_with_its_pid(store: Store) -> None:
    old = a_lingering_dead_row(store, current_jobs=["j-old"])  # the jobs it held when it died
    registry.register_worker(store, row("w4242-new", PID, store.now()))

    assert read_load(store, None, {PID: "w4242-new"})[1] == {PID: False}  # idle: it may retire

    registry.show_current_jobs(store, "w4242-new", ["j-new"])
    registry.beat_worker(store, old.id, old.last_heartbeat, "dead", [])  # and the old row holds none
    assert read_load(store, None, {PID: "w4242-new"})[1] == {PID: True}  # busy: it is not retired
    assert read_load(store, None, {PID: "w4242-starting"})[1] == {PID: True}  # no row yet: starting
