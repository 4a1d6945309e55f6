"""How a cancel of a running job reaches its worker at once: one "renew now" wake-up, which a
backlog of ordinary wake-ups must not lose, and one per bulk cancel, not one per job.

Both found by review: a bulk cancel of 20 running jobs woke every worker 20 times (with 8
workers x 32 running jobs, ``cancel --all`` took 1.57 s instead of 0.38 s), and once ten ordinary
wake-ups filled a worker's socket its stop byte was refused, so the run went on to the next
heartbeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreUnavailable
from queuectl.core.models import Job
from queuectl.service import handling
from queuectl.store.base import Store
from queuectl.store.sql.sqlite import SqliteStore
from queuectl.store.wake import _queue_length

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


def test_a_bulk_cancel_of_jobs_not_running_sends_no_stop_wake(
    store: Store, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle.enqueue(store, [make_job(f"j{i}", created_at=NOW) for i in range(5)])
    stops: list[bool] = []
    monkeypatch.setattr(store, "notify", lambda stop=False: stops.append(stop))
    assert len(handling.cancel_jobs(store, handling.Selection(everything=True)).done) == 5
    assert stops.count(True) == 0  # nothing ran: every worker renewing its leases would be for nothing


def test_a_bulk_cancel_cut_short_still_wakes_the_workers_of_the_running_jobs_it_cancelled(
    store: Store, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle.enqueue(store, [make_job(f"j{i}", created_at=NOW) for i in range(3)])
    assert len(store.claim("w1", None, NOW + 1, 60, limit=3)) == 3
    real, calls = lifecycle.cancel, []

    def failing_third(store: Store, job_id: str, *args: Any, **kwargs: Any) -> Job:
        calls.append(job_id)
        if len(calls) == 3:
            raise StoreUnavailable("the database went away")
        return real(store, job_id, *args, **kwargs)

    monkeypatch.setattr(handling.lifecycle, "cancel", failing_third)
    stops: list[bool] = []
    monkeypatch.setattr(store, "notify", lambda stop=False: stops.append(stop))
    with pytest.raises(StoreUnavailable):
        handling.cancel_jobs(store, handling.Selection(everything=True))
    assert [store.get(job_id).state for job_id in calls[:2]] == ["cancelled", "cancelled"]  # type: ignore[union-attr]
    assert stops.count(True) == 1  # two running jobs were cancelled: their workers are told


def test_a_stop_wake_survives_a_backlog_of_ordinary_wakes(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    waker = store.waker("w1")
    assert waker is not None
    try:
        for _ in range(20):  # twenty enqueues while the worker is busy in one loop turn
            store.notify()
        store.notify(stop=True)  # a cancel of one of its running jobs: refused, the queue is full
        assert b"s" in waker.drain()
        for _ in range(_queue_length()):  # as many as the sysctl says: the kernel holds one more
            store.notify()
        assert waker.drain() == b"!" * _queue_length()  # nothing was refused: no stop made up
        store.notify()
        assert waker.drain() == b"!"
    finally:
        waker.close()
        store.close()
