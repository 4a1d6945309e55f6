"""Hold, release and remove (issue 15) on every backend, through the lifecycle and the ``store`` fixture."""

from __future__ import annotations

from typing import Callable

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import Conflict, InvalidInput, NotFound, UniqueKeyTaken
from queuectl.core.models import CANCELLED, HELD, PENDING, WAITING, Job
from queuectl.store.base import Store

NOW = 1000.0
LEASE = 30.0
MakeJob = Callable[..., Job]


def test_a_held_job_is_listed_counted_and_never_claimed_until_released(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("h1"), make_job("h2")])
    lifecycle.hold(store, "h1", NOW)
    held = store.get("h1")
    assert held is not None and held.state == HELD
    assert [job.id for job in store.list_jobs(state=HELD)] == ["h1"]
    assert store.counts()["default"][HELD] == 1
    assert [job.id for job in store.claim("w1", None, NOW + 1, LEASE, limit=5)] == ["h2"]
    assert store.claim("w1", None, NOW + 2, LEASE, limit=5) == []
    assert store.next_due(None) is None
    lifecycle.release(store, "h1", NOW + 3)
    assert [job.id for job in store.claim("w1", None, NOW + 4, LEASE, limit=5)] == ["h1"]


def test_hold_and_release_refuse_jobs_in_other_states(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("p1"), make_job("c1", after=["p1"])])
    assert [job.id for job in store.claim("w1", None, NOW, LEASE)] == ["p1"]
    with pytest.raises(Conflict, match="processing: only a pending, failed or waiting job"):
        lifecycle.hold(store, "p1", NOW)
    _complete(store, "p1", NOW)
    with pytest.raises(Conflict, match="not held"):
        lifecycle.release(store, "p1", NOW)
    with pytest.raises(NotFound):
        lifecycle.hold(store, "nope", NOW)
    lifecycle.hold(store, "c1", NOW)
    with pytest.raises(Conflict, match="held already"):
        lifecycle.hold(store, "c1", NOW)


def _complete(store: Store, job_id: str, now: float, state: str = "completed") -> None:
    """Finish a claimed job as its worker would (``state``: completed or dead)."""
    from queuectl.core.models import Lease, Outcome

    job = store.get(job_id)
    assert job is not None and job.locked_by is not None
    assert lifecycle.finish(store, Lease(job_id, job.locked_by, job.attempts), Outcome(state, now, exit_code=0))


def _state(store: Store, job_id: str) -> str:
    job = store.get(job_id)
    assert job is not None
    return job.state


def test_a_held_waiting_job_is_released_to_what_its_parents_say_now(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(
        store,
        [make_job("p"), make_job("c1", after=["p"]), make_job("c2", after=["p"]), make_job("g", after=["c2"])],
    )
    lifecycle.hold(store, "c1", NOW)
    lifecycle.hold(store, "c2", NOW)
    assert lifecycle.release(store, "c1", NOW + 1) == WAITING  # its parent has not run yet
    lifecycle.hold(store, "c1", NOW + 2)
    assert [job.id for job in store.claim("w1", None, NOW + 3, LEASE)] == ["p"]
    _complete(store, "p", NOW + 4)
    assert (_state(store, "c1"), _state(store, "c2")) == (HELD, HELD)  # the parent's end did not release them
    assert store.claim("w1", None, NOW + 5, LEASE) == []
    assert lifecycle.release(store, "c1", NOW + 6) == PENDING  # not stranded waiting for a parent long done
    assert [job.id for job in store.claim("w1", None, NOW + 7, LEASE)] == ["c1"]
    assert lifecycle.release(store, "c2", NOW + 8) == PENDING
    assert _state(store, "g") == WAITING


def test_a_held_job_whose_parent_died_is_cancelled_on_release_with_its_dependants(
    store: Store, make_job: MakeJob
) -> None:
    lifecycle.enqueue(store, [make_job("p", max_retries=0), make_job("c", after=["p"]), make_job("g", after=["c"])])
    lifecycle.hold(store, "c", NOW)
    assert [job.id for job in store.claim("w1", None, NOW + 1, LEASE)] == ["p"]
    _complete(store, "p", NOW + 2, state="dead")
    assert _state(store, "c") == HELD
    assert lifecycle.release(store, "c", NOW + 3) == CANCELLED
    child = store.get("c")
    assert child is not None and child.last_error == "parent job p ended dead"
    assert _state(store, "g") == CANCELLED


def test_restart_runs_the_same_job_again_and_keeps_its_history(store: Store, make_job: MakeJob) -> None:
    from queuectl.core.models import COMPLETED, DEAD, Lease, Outcome

    lifecycle.enqueue(store, [make_job("r", max_retries=0, unique_key="k"), make_job("kid", after=["r"])])
    with pytest.raises(Conflict, match="only a completed, dead, cancelled job"):
        lifecycle.restart(store, store.get("r"), {}, NOW)  # type: ignore[arg-type]
    run = store.claim("w1", None, NOW, LEASE)[0]
    outcome = Outcome(DEAD, NOW + 1, exit_code=3, last_error="exit code 3", output="first\n", ended="failed")
    assert lifecycle.finish(store, Lease("r", "w1", run.attempts), outcome)
    assert _state(store, "kid") == CANCELLED
    dead = store.get("r")
    assert dead is not None
    assert lifecycle.restart(store, dead, {"command": "echo again", "priority": 7}, NOW + 2) == PENDING
    again = store.get("r")
    assert again is not None
    assert (again.state, again.attempts, again.command, again.priority) == (PENDING, 0, "echo again", 7)
    assert (again.exit_code, again.last_error, again.finished_at, again.output) == (None, None, None, None)
    assert _state(store, "kid") == CANCELLED  # only the restarted job runs again
    with pytest.raises((UniqueKeyTaken, Conflict)):
        lifecycle.enqueue(store, [make_job("other", unique_key="k")])  # it holds its key again
    second = store.claim("w2", None, NOW + 3, LEASE)[0]
    assert (second.id, second.attempts) == ("r", 1)
    assert lifecycle.finish(store, Lease("r", "w2", 1), Outcome(COMPLETED, NOW + 4, exit_code=0, ended="completed"))
    history = store.attempts("r")
    assert [(a.number, a.attempt, a.worker, a.ended) for a in history] == [
        (1, 1, "w1", "failed"),
        (2, 1, "w2", "completed"),
    ]
    kinds = [event.kind for event in store.read_events(job_id="r")]
    assert kinds.count("restarted") == 1 and kinds.index("restarted") < kinds.index("completed")


def test_restart_refuses_a_taken_unique_key_and_a_parent_that_can_never_complete(
    store: Store, make_job: MakeJob
) -> None:
    lifecycle.enqueue(store, [make_job("a", unique_key="k"), make_job("p"), make_job("c", after=["p"])])
    lifecycle.cancel(store, "a", NOW)
    lifecycle.enqueue(store, [make_job("b", unique_key="k")])
    with pytest.raises(Conflict, match="unique key 'k' is held by another active job"):
        lifecycle.restart(store, store.get("a"), {}, NOW + 1)  # type: ignore[arg-type]
    assert _state(store, "a") == CANCELLED
    lifecycle.cancel(store, "p", NOW + 2)
    with pytest.raises(Conflict, match="could never run again .parent job p ended cancelled."):
        lifecycle.restart(store, store.get("c"), {}, NOW + 3)  # type: ignore[arg-type]
    lifecycle.restart(store, store.get("p"), {}, NOW + 4)  # type: ignore[arg-type]
    assert lifecycle.restart(store, store.get("c"), {}, NOW + 5) == WAITING  # type: ignore[arg-type]


def test_a_held_job_keeps_its_unique_key_and_can_be_cancelled(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("k1", unique_key="nightly"), make_job("child", after=["k1"])])
    lifecycle.hold(store, "k1", NOW)
    with pytest.raises((UniqueKeyTaken, Conflict)):
        lifecycle.enqueue(store, [make_job("k2", unique_key="nightly")])
    child = store.get("child")
    assert child is not None and child.state == WAITING
    lifecycle.cancel(store, "k1", NOW + 1)
    child = store.get("child")
    assert child is not None and child.state == CANCELLED  # its parent can never complete now
    lifecycle.enqueue(store, [make_job("k3", unique_key="nightly")])  # the key is free again


def test_remove_deletes_a_pending_job_and_settles_its_dependants(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("r1"), make_job("r2", after=["r1"]), make_job("r3")])
    lifecycle.remove(store, "r1", NOW)
    assert store.get("r1") is None
    child = store.get("r2")
    assert child is not None and child.state == CANCELLED
    lifecycle.remove(store, "r2", NOW)
    assert store.get("r2") is None
    other = store.get("r3")
    assert other is not None and other.state == PENDING
    with pytest.raises(NotFound):
        lifecycle.remove(store, "r1", NOW)


def test_remove_refuses_a_running_job(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(store, [make_job("run1")])
    assert [job.id for job in store.claim("w1", None, NOW, LEASE)] == ["run1"]
    with pytest.raises(Conflict, match="cancel it first"):
        lifecycle.remove(store, "run1", NOW)
    assert store.get("run1") is not None


def test_labels_read_back_and_filter_lists_by_every_label_given(store: Store, make_job: MakeJob) -> None:
    lifecycle.enqueue(
        store,
        [
            make_job("l1", labels={"team": "web", "env": "prod"}, created_at=NOW),
            make_job("l2", labels={"team": "web"}, created_at=NOW + 1),
            make_job("l3", created_at=NOW + 2),
        ],
    )
    job = store.get("l1")
    assert job is not None and job.labels == {"team": "web", "env": "prod"}
    assert [j.id for j in store.list_jobs(labels=["team=web"])] == ["l2", "l1"]
    assert [j.id for j in store.list_jobs(labels=["team=web", "env=prod"])] == ["l1"]
    assert [j.id for j in store.list_jobs(state=PENDING, labels=["env=prod"])] == ["l1"]
    assert store.list_jobs(labels=["team=db"]) == []
    lifecycle.remove(store, "l1", NOW)
    assert store.list_jobs(labels=["env=prod"]) == []
    lifecycle.enqueue(store, [make_job("l1", labels={"team": "db"}, created_at=NOW + 3)])  # its id, reused
    assert [j.id for j in store.list_jobs(labels=["team=db"])] == ["l1"]
    assert [j.id for j in store.list_jobs(labels=["team=web"])] == ["l2"]


def test_jitter_spreads_a_delay_by_the_fraction_and_never_past_the_cap(make_job: MakeJob) -> None:
    from queuectl.core.config import RuntimeConfig

    config = RuntimeConfig(backoff_base=2.0, backoff_max=10.0, backoff_jitter=0.2)
    assert lifecycle.retry_delay(2, config, spread=0.0) == pytest.approx(3.2)
    assert lifecycle.retry_delay(2, config, spread=0.5) == pytest.approx(4.0)
    assert lifecycle.retry_delay(2, config, spread=0.999) == pytest.approx(4.8, abs=0.01)
    assert lifecycle.retry_delay(10, config, spread=0.999) == 10.0
    own = make_job("j", retry={"backoff_base": 3.0, "backoff_max": 5.0})
    assert lifecycle.retry_delay(1, config, own, spread=0.5) == 3.0
    assert lifecycle.retry_delay(4, config, own, spread=0.5) == 5.0
    delays = {lifecycle.failure_outcome(make_job("k", attempts=2), config, NOW, "x").run_at for _ in range(20)}
    assert len(delays) > 1 and all(NOW + 3.2 <= d <= NOW + 4.8 for d in delays if d is not None)


def test_the_exit_code_policy_decides_which_failures_are_retried(make_job: MakeJob) -> None:
    from queuectl.core.config import RuntimeConfig
    from queuectl.core.models import DEAD, FAILED

    config = RuntimeConfig()
    only = make_job("a", attempts=1, retry={"retry_on": [75, 111]})
    never = make_job("b", attempts=1, retry={"no_retry_on": [2]})
    assert lifecycle.failure_outcome(only, config, NOW, "exit code 75", exit_code=75).state == FAILED
    dead = lifecycle.failure_outcome(only, config, NOW, "exit code 1", exit_code=1)
    assert dead.state == DEAD and "not retried" in (dead.last_error or "")
    assert lifecycle.failure_outcome(only, config, NOW, "lease expired").state == FAILED  # no exit code
    assert lifecycle.failure_outcome(never, config, NOW, "exit code 2", exit_code=2).state == DEAD
    assert lifecycle.failure_outcome(never, config, NOW, "exit code 3", exit_code=3).state == FAILED


def test_a_job_retry_policy_reads_back(store: Store, make_job: MakeJob) -> None:
    policy = {"backoff_base": 3.0, "backoff_max": 60.0, "retry_on": [75]}
    lifecycle.enqueue(store, [make_job("p", retry=policy)])
    job = store.get("p")
    assert job is not None and job.retry == policy


def test_a_queue_limit_caps_the_claims_of_its_queue_only(store: Store, make_job: MakeJob) -> None:
    from queuectl.core.models import COMPLETED, Lease, Outcome
    from queuectl.service import queues as queue_service

    jobs = [make_job(f"b{n}", queue="builds", created_at=NOW + n) for n in range(4)]
    lifecycle.enqueue(store, [*jobs, make_job("d1", created_at=NOW + 10), make_job("d2", created_at=NOW + 11)])
    queue_service.set_limit(store, "builds", 2)
    queue_service.set_paused(store, "builds", False)  # a pause/resume keeps the limit
    assert queue_service.queue_limits(store) == {"builds": 2}
    first = store.claim("w1", ["builds"], NOW + 20, LEASE, limit=5)
    assert [job.id for job in first] == ["b0", "b1"]
    assert [job.id for job in store.claim("w2", ["builds", "default"], NOW + 20, LEASE, limit=5)] == ["d1", "d2"]
    assert store.claim("w3", None, NOW + 21, LEASE, limit=5) == []  # builds is full
    done = first[0]
    assert lifecycle.finish(store, Lease(done.id, "w1", done.attempts), Outcome(COMPLETED, NOW + 22, exit_code=0))
    assert [job.id for job in store.claim("w4", None, NOW + 23, LEASE, limit=5)] == ["b2"]
    queue_service.set_limit(store, "builds", None)
    assert queue_service.queue_limits(store) == {}
    assert [job.id for job in store.claim("w5", ["builds"], NOW + 24, LEASE, limit=5)] == ["b3"]


def test_a_queue_rate_caps_the_claims_started_in_any_window(store: Store, make_job: MakeJob) -> None:
    from queuectl.core.models import COMPLETED, Lease, Outcome
    from queuectl.service import queues as queue_service

    jobs = [make_job(f"a{n}", queue="api", created_at=NOW + n) for n in range(6)]
    lifecycle.enqueue(store, [*jobs, make_job("d1", created_at=NOW + 10)])
    assert queue_service.set_rate(store, "api", "2/s") == (2, 1.0)
    first = store.claim("w1", None, NOW + 20, LEASE, limit=5)
    assert sorted(job.id for job in first) == ["a0", "a1", "d1"]  # 2 of api, the other queue freely
    for job in first:  # finishing frees no rate slot: a rate counts starts, not running jobs
        assert lifecycle.finish(store, Lease(job.id, "w1", job.attempts), Outcome(COMPLETED, NOW + 20.1, exit_code=0))
    assert store.claim("w2", ["api"], NOW + 20.5, LEASE, limit=5) == []
    assert store.next_slot() == pytest.approx(NOW + 21)  # when the window has room again
    assert [job.id for job in store.claim("w2", ["api"], NOW + 21.01, LEASE, limit=5)] == ["a2", "a3"]
    assert store.claim("w3", None, NOW + 21.5, LEASE, limit=5) == []
    assert queue_service.get_queue(store, "api").rate == "2/s"
    queue_service.set_limit(store, "api", 1)  # a limit and a rate together: both hold
    assert queue_service.set_rate(store, "api", "10/m") == (10, 60.0)
    assert store.claim("w4", None, NOW + 22.5, LEASE, limit=5) == []  # a2 and a3 are still running
    row = queue_service.get_queue(store, "api")
    assert (row.limit, row.rate) == (1, "10/m")
    assert queue_service.set_rate(store, "api", "none") is None
    queue_service.set_limit(store, "api", None)
    assert sorted(job.id for job in store.claim("w5", None, NOW + 23, LEASE, limit=5)) == ["a4", "a5"]
    for bad in ("10", "0/s", "5/d", "10/m/s", "100000/s"):
        with pytest.raises(InvalidInput):
            queue_service.set_rate(store, "api", bad)


def test_a_rate_slot_is_given_back_when_no_job_is_there(store: Store, make_job: MakeJob) -> None:
    from queuectl.service import queues as queue_service

    queue_service.set_rate(store, "api", "1/h")
    assert store.claim("w1", ["api"], NOW, LEASE) == []  # nothing to run: the slot is not spent
    lifecycle.enqueue(store, [make_job("a1", queue="api"), make_job("a2", queue="api")])
    assert [job.id for job in store.claim("w1", ["api"], NOW + 1, LEASE, limit=2)] == ["a1"]
    assert store.claim("w1", ["api"], NOW + 2, LEASE) == []
    assert store.next_slot() == pytest.approx(NOW + 1 + 3600)
