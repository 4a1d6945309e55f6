"""The autoscaling rule (runtime/autoscale.py) on its own, and the supervisor's bookkeeping of a
worker that exits while it is being signalled."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from queuectl.runtime.autoscale import Autoscaler, ScalePolicy, parse_count

POLICY = ScalePolicy(1, 3, lag=2.0, idle=10.0, cooldown=5.0)


def test_count_is_a_number_or_a_range() -> None:
    assert parse_count("3") == (3, 3)
    assert parse_count("1..8") == (1, 8)
    for bad in ("0", "3..1", "a..b", "1..300", "", "1.."):
        with pytest.raises(ValueError):
            parse_count(bad)


def test_lag_grows_one_worker_per_cooldown_up_to_max() -> None:
    scaler = Autoscaler(POLICY)
    assert scaler.decide(0.0, {1: True}, lag=1.0) is None  # below the threshold
    assert scaler.decide(0.0, {1: True}, lag=2.5) == "grow"
    scaler.changed(0.0)
    assert scaler.decide(4.0, {1: True, 2: True}, lag=9.0) is None  # cooling down
    assert scaler.decide(5.0, {1: True, 2: True}, lag=9.0) == "grow"
    scaler.changed(5.0)
    assert scaler.decide(20.0, {1: True, 2: True, 3: True}, lag=9.0) is None  # at max


def test_a_worker_idle_long_enough_retires_down_to_min_only_without_lag() -> None:
    scaler = Autoscaler(POLICY)
    assert scaler.decide(0.0, {1: False, 2: True, 3: False}, lag=None) is None  # idle since 0
    assert scaler.decide(5.0, {1: False, 2: True, 3: True}, lag=None) is None  # 3 busy again: not idle
    assert scaler.decide(10.0, {1: False, 2: True, 3: False}, lag=3.0) is None  # lag: none retires (at max)
    assert scaler.decide(10.0, {1: False, 2: True, 3: False}, lag=None) == 1  # idle for 10 s
    scaler.changed(10.0)
    assert scaler.decide(30.0, {3: False}, lag=None) is None  # at min: kept


def test_a_worker_that_exits_while_the_stop_is_forwarded_is_still_reaped() -> None:
    """Popen.send_signal polls first, which reaps an exited worker behind the supervisor's own
    waitpid(-1) loop: it then waited forever for a worker already gone."""
    from queuectl.runtime.supervisor import Supervisor, WorkerProcess

    sup = Supervisor("sqlite:////nonexistent", 1, None, 1)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    sup.workers[proc.pid] = WorkerProcess(0, proc, time.monotonic(), f"w{proc.pid}-test")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a zombie: exited, not reaped yet
        with open(f"/proc/{proc.pid}/stat", "rb") as handle:
            if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    sup._forward_stop()
    sup._reap()
    assert sup.workers == {}
