"""Every write path, with a fault at every call number in turn (issue 12).

For each path the world is set up without faults, then the path runs with its N-th MongoDB
call failing -- before it reaches the server (not applied) or after (applied, reply lost) --
for N = 1, 2, ... until the path completes in fewer calls. The caller then does what it does in
real life (the worker keeps an outcome and sends it again, a user re-runs a command), the
repair pass runs, and :meth:`World.check` asserts: no job lost, none stuck in processing without
a live lease, none handed out twice for one attempt, every hook run once, every dependant
settled, every file all-or-nothing. Each path also states where its jobs must end up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import Conflict, QueuectlError
from queuectl.core.models import Job, Outcome
from queuectl.service import schedules
from queuectl.store.mongo import batches

from .world import LEASE, T, World, job

MAX_CALLS = 80  # a path needing more calls than this is a bug of its own


@dataclass
class Path:
    setup: Callable[[World], object]
    act: Callable[[World], object]
    retry: Callable[[World, bool], object]  # the caller's next move (True: the act raised)
    expect: Callable[[World, bool], None]


def _family(w: World) -> None:
    """p (with an on-finish hook), c after p, f compensating p."""
    lifecycle.enqueue(
        w.store, [job("p", on_finish="true", max_retries=0), job("c", after=["p"]), job("f", on_failure_of="p")]
    )


def _claimed_family(w: World) -> None:
    _family(w)
    w.claim(1)


def _retry_outcome(state: str) -> Callable[[World, bool], None]:
    def retry(w: World, raised: bool) -> None:
        lease = w.held.pop("p")
        if raised:  # the worker kept the outcome: sent again, fenced (written at most once)
            lifecycle.finish(w.store, lease, _outcome(w, state))

    return retry


def _outcome(w: World, state: str) -> Outcome:
    if state == "completed":
        return lifecycle.success_outcome(T + 1, "ok", 1.0)
    stored = w.store._jobs._collection.find_one({"_id": "p"})
    return lifecycle.failure_outcome(job("p", attempts=stored["attempts"], max_retries=0), w.config, T + 1, "exit 1", 1)


def _expect(**states: str) -> Callable[[World, bool], None]:
    def expect(w: World, raised: bool) -> None:
        assert {job_id: w.state(job_id) for job_id in states} == states

    return expect


def _file(n: int) -> list[Job]:
    return [job(f"j{i}", unique_key="k0" if i == 0 else None) for i in range(n)]


def _enqueue_file(w: World) -> object:
    return lifecycle.enqueue(w.store, _file(5))


def _file_retry(w: World, raised: bool) -> None:
    if raised:  # the user is told it failed, and runs it again: it must go in whole
        w.repair(T + batches.ABANDONED_AFTER_S + 1)
        assert lifecycle.enqueue(w.store, _file(5)) == 5


def _file_expect(w: World, raised: bool) -> None:
    assert sorted(j.id for j in w.store.list_jobs(limit=100)) == [f"j{i}" for i in range(5)]


def _claim_retry(w: World, raised: bool) -> None:
    w.claim(3 - len(w.held))  # the worker claims again for its free slots
    w.complete_all(T + 2)


def _heartbeat(w: World) -> object:
    lost = lifecycle.heartbeat(w.store, "w1", [(w.held["p"], "out")], T + 5, LEASE)
    assert not lost, "a renewal whose reply was lost reported the lease lost: the run would be killed"
    return lost


def _heartbeat_retry(w: World, raised: bool) -> None:
    if raised:
        assert not lifecycle.heartbeat(w.store, "w1", [(w.held["p"], "out")], T + 6, LEASE)
    doc = w.store._jobs._collection.find_one({"_id": "p"})
    assert doc["lease_expires_at"] >= T + 5 + LEASE
    w.complete_all(T + 7)


def _cancel_retry(w: World, raised: bool) -> None:
    if raised:
        try:
            lifecycle.cancel(w.store, "p", T + 1)
        except Conflict:
            pass  # it was cancelled after all


def _dead_family(w: World) -> None:
    _claimed_family(w)
    lease = w.held.pop("p")
    lifecycle.finish(w.store, lease, _outcome(w, "dead"))
    w.repair(T + 1)


def _retry_dead_retry(w: World, raised: bool) -> None:
    if raised:
        try:
            lifecycle.retry_dead(w.store, "p", T + 2)
        except Conflict:
            pass


def _schedule(w: World) -> None:
    schedules.add_schedule(w.store, "tick", "* * * * *", {"command": "true"}, "UTC", T)


def _fire(w: World) -> object:
    return schedules.fire_due_schedules(w.store, T + 120)


def _fire_retry(w: World, raised: bool) -> None:
    schedules.fire_due_schedules(w.store, T + 120)  # the next tick, or another worker


def _fire_expect(w: World, raised: bool) -> None:
    fired = [j for j in w.store.list_jobs(limit=10) if j.schedule == "tick"]
    assert len(fired) == 1, fired
    [schedule] = schedules.list_schedules(w.store)
    assert schedule.next_fire_at > T + 120


def _recover(w: World) -> object:
    w.held.clear()  # its worker died
    return lifecycle.recover_expired(w.store, w.config, T + LEASE + 1)


def _recover_retry(w: World, raised: bool) -> None:
    lifecycle.recover_expired(w.store, w.config, T + LEASE + 2)  # the next pass


def _finished_family(w: World) -> None:
    _claimed_family(w)
    lifecycle.finish(w.store, w.held.pop("p"), _outcome(w, "completed"))


PATHS = {
    "enqueue": Path(
        lambda w: None,
        lambda w: lifecycle.enqueue(w.store, [job("a", unique_key="k"), job("b", after=["a"])]),
        lambda w, raised: (
            lifecycle.enqueue(w.store, [job("a", unique_key="k"), job("b", after=["a"])]) if raised else None
        ),
        _expect(a="pending", b="waiting"),
    ),
    "enqueue --file": Path(lambda w: None, _enqueue_file, _file_retry, _file_expect),
    "claim": Path(
        lambda w: lifecycle.enqueue(w.store, [job(f"j{i}", created_at=T - 10 + i) for i in range(3)]),
        lambda w: w.claim(3),
        _claim_retry,
        _expect(j0="completed", j1="completed", j2="completed"),
    ),
    "heartbeat": Path(_claimed_family, _heartbeat, _heartbeat_retry, _expect(p="completed", c="pending")),
    "finish": Path(
        _claimed_family,
        lambda w: lifecycle.finish(w.store, w.held["p"], _outcome(w, "completed")),
        _retry_outcome("completed"),
        _expect(p="completed", c="pending", f="cancelled"),
    ),
    "fail": Path(
        _claimed_family,
        lambda w: lifecycle.finish(w.store, w.held["p"], _outcome(w, "dead")),
        _retry_outcome("dead"),
        _expect(p="dead", c="cancelled", f="pending"),
    ),
    "cancel": Path(
        _family,
        lambda w: lifecycle.cancel(w.store, "p", T + 1),
        _cancel_retry,
        _expect(p="cancelled", c="cancelled", f="pending"),
    ),
    "dlq retry": Path(
        _dead_family,
        lambda w: lifecycle.retry_dead(w.store, "p", T + 2),
        _retry_dead_retry,
        _expect(p="pending", c="cancelled", f="pending"),
    ),
    "schedule fire": Path(_schedule, _fire, _fire_retry, _fire_expect),
    "hook": Path(
        _finished_family,
        lambda w: w.run_hooks(T + 2),
        lambda w, raised: w.run_hooks(T + 3),  # the housekeeper's next turn
        _expect(p="completed", c="pending", f="cancelled"),
    ),
    "recover": Path(_claimed_family, _recover, _recover_retry, _expect(p="dead", c="cancelled", f="pending")),
}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("name", list(PATHS))
def test_a_fault_at_any_call_loses_nothing(name: str, when: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "CHUNK", 2)  # a file of 5 jobs is three inserts
    path = PATHS[name]
    for call in range(1, MAX_CALLS + 1):
        w = World()
        path.setup(w)
        w.faults.arm(call, when)
        try:
            path.act(w)
            raised = False
        except QueuectlError:
            raised = True
        fired = bool(w.faults.fired)
        w.faults.disarm()
        if not fired:
            assert not raised
            assert call > 1, "the path made no MongoDB call"
            break
        context = f"{name}: fault {when} call {call} ({w.faults.fired[0][2]}), raised={raised}"
        try:
            path.retry(w, raised)
            w.repair(T + 100)
            w.check()
            path.expect(w, raised)
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from exc
    else:
        pytest.fail(f"{name} still calling MongoDB after {MAX_CALLS} calls")
