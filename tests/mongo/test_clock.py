"""Finding 9: one clock. Two hosts share a queue; one's clock runs 20 s ahead. Leases are
compared on the server's time, so the fast host never takes over the other's live job, and it
is told, in one line, that its clock is off."""

from __future__ import annotations

import threading
import time
from typing import Callable

import mongomock
import pytest

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.models import Lease
from queuectl.runtime.worker import Worker, WorkerOptions
from queuectl.store.mongo.store import MongoStore

from .faults import Faults, FaultyClient
from .world import job

SKEW = 20.0
LEASE = 3.0


def host(client: FaultyClient, ahead: float, server_time: bool) -> MongoStore:
    clock: Callable[[], float] = lambda: time.time() + ahead  # noqa: E731
    return MongoStore(client, db_name="clock", host_clock=clock, server_clock=time.time if server_time else None)


def run_two_hosts(server_time: bool) -> tuple[set[str], list[str]]:
    """Host A runs a job for 1.5 s, renewing its 3 s lease; host B (20 s fast) sweeps for expired
    leases all the while. Returns what A was told it lost and what B recovered."""
    client = FaultyClient(mongomock.MongoClient(), Faults())
    a, b = host(client, 0.0, server_time), host(client, SKEW, server_time)
    lifecycle.enqueue(a, [job("j", created_at=a.now())])
    [taken] = lifecycle.claim(a, "wA", None, a.now(), LEASE, 1)
    lease = Lease("j", "wA", taken.attempts)
    config = RuntimeConfig(lease=LEASE, heartbeat=0.5)
    one_at_a_time = threading.Lock()  # mongomock's cursors are not thread-safe; MongoDB's writes are atomic
    lost: set[str] = set()
    recovered: list[str] = []
    end = time.monotonic() + 1.5

    def host_a() -> None:
        while time.monotonic() < end:
            with one_at_a_time:
                lost.update(lifecycle.heartbeat(a, "wA", [(lease, None)], a.now(), LEASE))
            time.sleep(0.2)

    def host_b() -> None:
        while time.monotonic() < end:
            with one_at_a_time:
                recovered.extend(lifecycle.recover_expired(b, config, b.now()))
            time.sleep(0.05)

    threads = [threading.Thread(target=host_a), threading.Thread(target=host_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return lost, recovered


def test_a_host_whose_clock_runs_ahead_never_takes_over_a_live_job() -> None:
    lost, recovered = run_two_hosts(server_time=True)
    assert recovered == [] and lost == set()


def test_without_the_server_clock_the_fast_host_would_take_it_over() -> None:
    # the control: the test above can fail, and this is how the bug looked
    lost, recovered = run_two_hosts(server_time=False)
    assert recovered == ["j"] and lost == {"j"}


def server_behind(by: float) -> MongoStore:
    """A store on this host (its real clock) whose server's clock is ``by`` seconds behind."""
    client = FaultyClient(mongomock.MongoClient(), Faults())
    return MongoStore(client, db_name="clock", server_clock=lambda: time.time() - by)


def test_a_skewed_host_is_warned_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    worker = Worker(server_behind(SKEW), WorkerOptions(worker_id="wB"))
    worker._warn_of_skew()
    lines = [line for line in capsys.readouterr().err.splitlines() if "clock" in line]
    assert len(lines) == 1 and "ahead of the database's" in lines[0] and "20." in lines[0]


def test_a_host_within_a_quarter_of_the_lease_is_not_warned(capsys: pytest.CaptureFixture[str]) -> None:
    worker = Worker(server_behind(2.0), WorkerOptions(worker_id="wB"))  # lease 30 s
    worker._warn_of_skew()
    assert "clock" not in capsys.readouterr().err
