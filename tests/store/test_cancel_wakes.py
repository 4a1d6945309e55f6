"""How a cancel of a running job reaches its worker at once: one "renew now" wake-up, which a
backlog of ordinary wake-ups must not lose, and one per bulk cancel, not one per job.

Both found by review: a bulk cancel of 20 running jobs woke every worker 20 times (with 8
workers x 32 running jobs, ``cancel --all`` took 1.57 s instead of 0.38 s), and once ten ordinary
wake-ups filled a worker's socket its stop byte was refused, so the run went on to the next
heartbeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from queuectl.core import lifecycle
from queuectl.core.models import Job
from queuectl.service import handling
from queuectl.store.base import Store
from queuectl.store.sql.sqlite import SqliteStore

NOW = 1000.0


def test_a_bulk_cancel_of_running_jobs_wakes_the_workers_once(
    store: Store, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle.enqueue(store, [make_job(f"j{i}", created_at=NOW) for i in range(20)])
    assert len(store.claim("w1", None, NOW + 1, 60, limit=20)) == 20
    stops: list[bool] = []
    monkeypatch.setattr(store, "notify", lambda stop=False: stops.append(stop))

    result = handling.cancel_jobs(store, handling.Selection(everything=True))

    assert len(result.done) == 20
    assert stops.count(True) == 1, f"{stops.count(True)} stop-wakes for one bulk cancel"


def test_a_single_cancel_of_a_running_job_wakes_the_workers(
    store: Store, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle.enqueue(store, [make_job("run", created_at=NOW), make_job("wait", created_at=NOW + 1)])
    assert [job.id for job in store.claim("w1", None, NOW + 2, 60, limit=1)] == ["run"]
    stops: list[bool] = []
    monkeypatch.setattr(store, "notify", lambda stop=False: stops.append(stop))
    lifecycle.cancel(store, "wait", NOW + 3)
    assert stops.count(True) == 0  # nothing ran: no worker needs to look
    lifecycle.cancel(store, "run", NOW + 3)
    assert stops.count(True) == 1


def test_a_stop_wake_survives_a_backlog_of_ordinary_wakes(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    waker = store.waker("w1")
    assert waker is not None
    try:
        for _ in range(20):  # twenty enqueues while the worker is busy in one loop turn
            store.notify()
        store.notify(stop=True)  # a cancel of one of its running jobs: refused, the queue is full
        assert b"s" in waker.drain()
        store.notify()
        assert waker.drain() == b"!"  # a short queue is read as it is
    finally:
        waker.close()
        store.close()
