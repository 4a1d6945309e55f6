"""An exact ``queue limit`` on MongoDB (issue 15): seats in the queue's document, taken by one
conditional update each, bound to the job claim, freed by reconciling with the processing jobs.
Faults injected where a seat could leak or be counted twice: a lost reply after the seat's
``$push``, a claimer gone between its seat and its job claim, a lost reply of the binding."""

from __future__ import annotations

from typing import Any

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreUnavailable
from queuectl.core.models import PROCESSING, Lease
from queuectl.service import queues as queue_service
from queuectl.store.mongo.gates import SEAT_GRACE_S

from .world import LEASE, T, World, job

LIMIT = 2


def limited_world(jobs: int = 6) -> World:
    w = World()
    lifecycle.enqueue(w.store, [job(f"b{i}", queue="builds", created_at=T - 100 + i) for i in range(jobs)])
    queue_service.set_limit(w.store, "builds", LIMIT)
    return w


def running(w: World) -> int:
    return len(w.store.list_jobs(state=PROCESSING, queue="builds", limit=100))


def seats(w: World) -> list[dict[str, Any]]:
    doc = w.store._queues.find_one({"_id": "builds"}) or {}
    return list(doc.get("seats", []))


def call_of(name: str, nth: int = 1) -> int:
    """The number (from now) of the ``nth`` call to ``name`` in a claim of 3, by a dry run."""
    probe = limited_world()
    start = probe.faults.calls
    probe.claim(3)
    hits = [n - start for n, where in enumerate(probe.faults.log, 1) if n > start and where == name]
    return hits[nth - 1]


def test_claims_by_many_workers_never_pass_the_limit_and_every_way_out_frees_a_seat() -> None:
    w = limited_world()
    first = lifecycle.claim(w.store, "w1", None, T, LEASE, 5)
    assert [j.id for j in first] == ["b0", "b1"]
    assert lifecycle.claim(w.store, "w2", None, T, LEASE, 5) == []
    assert lifecycle.claim(w.store, "w3", ["builds"], T, LEASE, 5) == []
    assert all(seat["bound"] for seat in seats(w)) and len(seats(w)) == LIMIT
    done = first[0]  # finish: its seat is freed by the next claim that finds the queue full
    assert lifecycle.finish(w.store, Lease(done.id, "w1", done.attempts), lifecycle.success_outcome(T + 1, "ok", 1.0))
    assert [j.id for j in lifecycle.claim(w.store, "w2", None, T + 2, LEASE, 5)] == ["b2"]
    lifecycle.cancel(w.store, "b1", T + 3)  # cancel
    assert [j.id for j in lifecycle.claim(w.store, "w3", None, T + 4, LEASE, 5)] == ["b3"]
    assert running(w) == LIMIT
    # recovery of an expired lease (the worker died): failed, so its seat is free again
    assert lifecycle.recover_expired(w.store, w.config, T + 2 + LEASE + 1) == ["b2"]
    claimed = lifecycle.claim(w.store, "w4", None, T + 2 + LEASE + 2, LEASE, 5)
    assert len(claimed) == 1 and running(w) == LIMIT
    assert len(seats(w)) == LIMIT


def test_jobs_running_before_the_limit_was_set_count_against_it() -> None:
    w = World()
    lifecycle.enqueue(w.store, [job(f"b{i}", queue="builds", created_at=T - 10 + i) for i in range(4)])
    assert len(lifecycle.claim(w.store, "w1", None, T, LEASE, 2)) == 2  # no limit yet: no seats
    queue_service.set_limit(w.store, "builds", LIMIT)
    assert lifecycle.claim(w.store, "w2", None, T + 1, LEASE, 5) == []
    assert running(w) == 2


def test_a_lost_reply_after_the_seat_is_taken_neither_leaks_it_nor_passes_the_limit() -> None:
    w = limited_world()
    w.faults.arm(call_of("queues.update_one"), "after")  # the first seat's $push: applied, reply lost
    w.claim(3)
    assert w.faults.fired, "the fault did not fire"
    assert running(w) == LIMIT and len(seats(w)) == LIMIT  # the seat was found by its token, used once
    w.complete_all(T + 1)
    w.claim(3, now=T + 2)  # both seats free again at once: bound seats of finished jobs are reconciled
    assert running(w) == LIMIT and len(seats(w)) == LIMIT


def test_a_claimer_gone_between_its_seat_and_its_claim_holds_the_seat_only_for_the_grace() -> None:
    w = limited_world()
    w.faults.arm(call_of("jobs.find_one_and_update", 2), "before")  # the job claim (the 1st is the free queues')
    with pytest.raises(StoreUnavailable):
        lifecycle.claim(w.store, "w1", None, T, LEASE, 3)
    assert len(seats(w)) == 1 and not seats(w)[0]["bound"] and running(w) == 0
    assert len(lifecycle.claim(w.store, "w2", None, T + 1, LEASE, 3)) == LIMIT - 1  # the seat may be in flight
    assert lifecycle.claim(w.store, "w3", None, T + SEAT_GRACE_S + 2, LEASE, 3) != []  # then it is freed
    assert running(w) == LIMIT


def test_a_lost_binding_keeps_the_seat_while_its_job_runs() -> None:
    w = limited_world()
    w.faults.arm(call_of("queues.update_one", 2), "before")  # the binding of the first seat
    w.claim(3)
    assert w.faults.fired and running(w) == LIMIT
    assert [seat["bound"] for seat in seats(w)].count(False) == 1
    w.claim(3, now=T + SEAT_GRACE_S + 5)  # past the grace, but its job still runs: not freed
    assert running(w) == LIMIT
    w.complete_all(T + SEAT_GRACE_S + 6)
    w.claim(3, now=T + SEAT_GRACE_S + 7)
    assert running(w) == LIMIT and len(seats(w)) == LIMIT


def test_an_outage_reconciling_leaves_the_limit_safe() -> None:
    w = limited_world()
    w.claim(3)
    w.complete_all(T + 1)
    w.faults.arm(1, "before")  # anything in the next claim fails first
    with pytest.raises(StoreUnavailable):
        w.claim(3, now=T + 2)
    w.claim(3, now=T + 3)
    assert running(w) == LIMIT


def test_four_threads_claiming_and_finishing_at_once_never_pass_the_limit() -> None:
    import threading

    w = limited_world(jobs=40)
    peak: list[int] = []
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            for round_ in range(30):
                now = T + round_ * 0.01
                taken = lifecycle.claim(w.store, worker, None, now, LEASE, 3)
                peak.append(running(w))
                for claimed in taken:
                    lease = Lease(claimed.id, worker, claimed.attempts)
                    assert lifecycle.finish(w.store, lease, lifecycle.success_outcome(now, "ok", 0.0))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert max(peak) == LIMIT  # the limit was used, and never passed
    assert len(w.store.list_jobs(state="completed", limit=100)) == 40
