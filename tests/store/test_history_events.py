"""The store contract for the attempt history and the event log, on every backend (the ``store``
fixture: SQLite, mongomock, a real MongoDB when configured).

Each transition's history row and events are checked where the transition writes them, and
that nothing is logged for a write whose guard failed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.lifecycle import events as ev
from queuectl.core.models import (
    CANCELLED,
    COMPLETED,
    DEAD,
    ENDED_CANCELLED,
    ENDED_LEASE_LOST,
    FAILED,
    PENDING,
    Event,
    Job,
    Lease,
)
from queuectl.service import events as event_service
from queuectl.service import history
from queuectl.store.base import Store

T = 1000.0
CONFIG = RuntimeConfig(max_retries=1, backoff_base=2, lease=30, backoff_jitter=0.0)  # exact retry times


def kinds(store: Store, job_id: str | None = None) -> list[str]:
    return [event.kind for event in store.read_events(0, 1000, job_id=job_id)]


def claim_one(store: Store, worker: str = "w1", now: float = T) -> Job:
    (job,) = lifecycle.claim(store, worker, None, now, 30, 1)
    return job


def fail(store: Store, job: Job, now: float, output: str) -> bool:
    lease = Lease(job.id, job.locked_by or "", job.attempts)
    outcome = lifecycle.failure_outcome(job, CONFIG, now, f"exit code {job.attempts}", job.attempts, output, 0.5)
    return lifecycle.finish(store, lease, replace(outcome, claimed_at=job.started_at, host="h1", pid=42))


def test_each_attempt_is_a_row_of_its_own(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_job(make_job("a", max_retries=2))
    first = claim_one(store, "w1", T)
    assert fail(store, first, T + 1, "out 1")
    second = claim_one(store, "w2", T + 10)
    assert fail(store, second, T + 11, "out 2")
    third = claim_one(store, "w1", T + 20)
    lease = Lease("a", "w1", third.attempts)
    done = replace(lifecycle.success_outcome(T + 21, "out 3", 0.2), claimed_at=T + 20, max_rss_kb=2048, cpu_s=0.1)
    assert lifecycle.finish(store, lease, done)

    rows = store.attempts("a")
    assert [row.number for row in rows] == [1, 2, 3]
    assert [row.worker for row in rows] == ["w1", "w2", "w1"]
    assert [row.exit_code for row in rows] == [1, 2, 0]
    assert [row.output for row in rows] == ["out 1", "out 2", "out 3"]
    assert [row.ended for row in rows] == ["failed", "failed", "completed"]
    assert rows[0].claimed_at == T and rows[0].ended_at == T + 1 and rows[0].host == "h1" and rows[0].pid == 42
    assert rows[0].error == "exit code 1" and rows[2].error is None
    assert rows[2].max_rss_kb == 2048 and rows[2].cpu_s == 0.1
    assert store.attempts("nope") == []


def test_only_the_latest_attempts_keep_their_output(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_job(make_job("a", max_retries=5))
    for n in range(4):
        job = claim_one(store, "w1", T + 10 * n)
        outcome = lifecycle.failure_outcome(job, CONFIG, T + 10 * n + 1, "boom", 1, f"out {n + 1}")
        assert lifecycle.finish(store, Lease("a", "w1", job.attempts), replace(outcome, keep_outputs=2))
    rows = store.attempts("a")
    assert len(rows) == 4  # every row stays
    assert [row.output for row in rows] == [None, None, "out 3", "out 4"]


def test_a_write_whose_fence_failed_logs_nothing(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_job(make_job("a"))
    job = claim_one(store)
    stale = Lease("a", "someone-else", job.attempts)
    assert not lifecycle.finish(store, stale, lifecycle.success_outcome(T + 1, "x", 0.1))
    assert store.attempts("a") == []
    assert kinds(store, "a") == [ev.ENQUEUED, ev.CLAIMED]


def test_the_log_follows_a_job_through_its_life(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_jobs([make_job("a", max_retries=0, queue="q1"), make_job("b", queue="q2", created_at=T + 1)])
    job = claim_one(store, "w1", T + 2)
    assert fail(store, job, T + 3, "no")

    log = store.read_events(0, 100)
    assert [(e.kind, e.job_id) for e in log] == [
        (ev.ENQUEUED, "a"),
        (ev.ENQUEUED, "b"),
        (ev.CLAIMED, "a"),
        (ev.DEAD_EVENT, "a"),
    ]
    seqs = [e.seq for e in log]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    claimed, dead = log[2], log[3]
    assert claimed.state == "processing" and claimed.queue == "q1" and claimed.data["worker"] == "w1"
    assert dead.state == DEAD and dead.queue == "q1" and dead.data["exit_code"] == 1 and dead.at == T + 3
    # reading: after a sequence number, by job, by queue, by time, the newest
    assert [e.seq for e in store.read_events(seqs[1], 100)] == seqs[2:]
    assert [e.kind for e in store.read_events(0, 100, job_id="b")] == [ev.ENQUEUED]
    assert [e.job_id for e in store.read_events(0, 100, queue="q2")] == ["b"]
    assert [e.kind for e in store.read_events(0, 100, since=T + 2)] == [ev.CLAIMED, ev.DEAD_EVENT]
    assert [e.seq for e in store.read_events(0, 2, newest=True)] == seqs[2:]
    assert [e.seq for e in store.read_events(0, 2)] == seqs[:2]


def test_a_failure_logs_its_retry_time(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_job(make_job("a", max_retries=3))
    job = claim_one(store)
    assert fail(store, job, T + 1, "")
    (failed,) = [e for e in store.read_events(0, 100) if e.kind == ev.FAILED_EVENT]
    assert failed.state == FAILED and failed.data["retry_at"] == T + 1 + 2**1


def test_a_recovered_lease_is_recorded_on_the_attempt_it_ended(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_job(make_job("a", max_retries=3))
    claim_one(store, "w-dead", T)
    store.update_job("a", {"output": "half done"}, lease=Lease("a", "w-dead", 1))
    assert lifecycle.recover_expired(store, CONFIG, T + 31) == ["a"]

    (row,) = store.attempts("a")
    assert row.ended == ENDED_LEASE_LOST and row.worker == "w-dead" and row.claimed_at == T
    assert row.output == "half done" and "presumed dead" in (row.error or "")
    log = store.read_events(0, 100)
    assert [e.kind for e in log][-2:] == [ev.LEASE_LOST, ev.WORKER_UNRESPONSIVE]
    assert log[-2].state == FAILED and log[-1].data["worker"] == "w-dead"


def test_cancel_settle_and_dlq_retry_are_logged(store: Store, make_job: Callable[..., Job]) -> None:
    lifecycle.enqueue(store, [make_job("p"), make_job("c", after=["p"], created_at=T + 1)])
    store.insert_job(make_job("x", created_at=T + 2))
    running = claim_one(store, "w1", T + 3)
    assert running.id == "p"
    lifecycle.cancel(store, "p", T + 4)  # a running job: its attempt ends as cancelled

    (row,) = store.attempts("p")
    assert row.ended == ENDED_CANCELLED and row.worker == "w1"
    cancelled = [e for e in store.read_events(0, 100) if e.kind == ev.CANCELLED_EVENT]
    assert [(e.job_id, e.state) for e in cancelled] == [("p", CANCELLED), ("c", CANCELLED)]
    assert "parent job p" in cancelled[1].data["reason"]

    # a released child logs "pending"
    lifecycle.enqueue(store, [make_job("q", created_at=T + 5), make_job("r", after=["q"], created_at=T + 6)])
    job = lifecycle.claim(store, "w1", None, T + 7, 30, 5)
    q_job = next(j for j in job if j.id == "q")
    assert lifecycle.finish(store, Lease("q", "w1", q_job.attempts), lifecycle.success_outcome(T + 8, "", 0.1))
    released = [e for e in store.read_events(0, 100) if e.kind == ev.RELEASED]
    assert [(e.job_id, e.state, e.data.get("after")) for e in released] == [("r", PENDING, "q")]

    # DLQ retries, one and all
    x = next(j for j in job if j.id == "x")
    store.update_job(
        "x", {"state": DEAD, "updated_at": T + 9, "finished_at": T + 9}, lease=Lease("x", "w1", x.attempts)
    )
    assert lifecycle.retry_dead(store, "x", T + 10) == 1
    retried = [e for e in store.read_events(0, 100) if e.kind == ev.RETRIED]
    assert [(e.job_id, e.state, e.queue) for e in retried] == [("x", PENDING, "default")]


def test_retrying_every_dead_job_logs_one_event_each(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_jobs([make_job("d1", state=DEAD), make_job("d2", state=DEAD, queue="other"), make_job("ok")])
    assert lifecycle.retry_dead(store, None, T + 1) == 2
    retried = [e for e in store.read_events(0, 100) if e.kind == ev.RETRIED]
    assert sorted((e.job_id, e.queue, e.state) for e in retried) == [
        ("d1", "default", PENDING),
        ("d2", "other", PENDING),
    ]


def test_progress_is_saved_with_the_heartbeat_and_logged(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_job(make_job("a"))
    job = claim_one(store)
    lease = Lease("a", "w1", job.attempts)
    lost = lifecycle.heartbeat(store, "w1", [(lease, None)], T + 5, 30, {"a": (40.0, 100.0, "resizing")})
    assert lost == set()
    saved = store.get("a")
    assert saved is not None
    assert (saved.progress_done, saved.progress_total, saved.progress_message, saved.progress_at) == (
        40.0,
        100.0,
        "resizing",
        T + 5,
    )
    progress = history.progress_of(saved)
    assert progress is not None and progress.percent == 40.0 and progress.eta == 7.5  # 40 in 5 s: 60 more in 7.5
    (event,) = [e for e in store.read_events(0, 100) if e.kind == ev.PROGRESS]
    assert event.data == {"done": 40.0, "total": 100.0, "message": "resizing"} and event.queue == "default"
    # a beat without a new report logs nothing more
    lifecycle.heartbeat(store, "w1", [(lease, None)], T + 6, 30)
    assert kinds(store).count(ev.PROGRESS) == 1
    # the next attempt starts without the last one's progress
    store.update_job("a", {"state": FAILED, "run_at": T + 7, "updated_at": T + 7}, lease=lease)
    again = claim_one(store, "w1", T + 8)
    assert again.progress_done is None and history.progress_of(again) is None


def test_registry_writes_log_their_events(store: Store) -> None:
    started = ev.worker_event(ev.WORKER_STARTED, "w9", T, host="h", pid=7)
    assert store.registry_put("workers", "w9", _worker("w9"), events=[started])
    stopped = ev.worker_event(ev.WORKER_STOPPED, "w9", T + 1)
    assert store.registry_update("workers", {"state": "stopped"}, key="w9", events=[stopped]) == 1
    assert store.registry_update("workers", {"state": "stopped"}, key="nobody", events=[stopped]) == 0
    log = store.read_events(0, 100)
    assert [(e.kind, e.data["worker"], e.job_id) for e in log] == [
        (ev.WORKER_STARTED, "w9", None),
        (ev.WORKER_STOPPED, "w9", None),
    ]


def _worker(worker_id: str) -> dict[str, Any]:
    return {
        "id": worker_id,
        "host": "h",
        "pid": 7,
        "state": "running",
        "started_at": T,
        "last_heartbeat": T,
        "queues": "*",
        "concurrency": 1,
        "current_jobs": [],
    }


def test_history_goes_with_its_job_and_events_by_age(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_job(make_job("a"))
    job = claim_one(store, "w1", T + 1)
    assert lifecycle.finish(store, Lease("a", "w1", job.attempts), lifecycle.success_outcome(T + 2, "x", 0.1))
    lifecycle.repair(store, T + 100)  # MongoDB: settled and published, so the job may go
    assert store.purge([COMPLETED], T + 3, limit=10) == 1
    assert store.attempts("a") == []
    assert len(store.read_events(0, 100)) == 3  # the log keeps its own time
    assert store.purge_events(T + 0.5, 10) == 1  # the enqueued event, at T
    assert [e.kind for e in store.read_events(0, 100)] == [ev.CLAIMED, ev.COMPLETED_EVENT]
    newest = store.read_events(0, 1, newest=True)[0].seq
    store.insert_job(make_job("b", created_at=T + 50))
    assert store.read_events(newest, 10)[0].seq > newest  # numbers are never reused


def test_the_service_reads_pages_and_follows(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_jobs([make_job(f"j{i}", created_at=T + i) for i in range(5)])
    since = event_service.parse_since("2", T)
    assert [e.job_id for e in event_service.read_events(store, since)] == ["j2", "j3", "j4"]
    assert [e.job_id for e in event_service.read_events(store, since, limit=2)] == ["j2", "j3"]
    assert len(event_service.read_events(store, None, limit=2)) == 2
    assert event_service.start_of(store, None) == event_service.last_seq(store)
    seen: list[Event] = []
    for event in event_service.follow(store, 0, job_id="j3", keep_going=lambda: not seen, sleep=lambda _: None):
        seen.append(event)
    assert [e.job_id for e in seen] == ["j3"]


def test_retention_purges_the_log_by_the_retain_events_key(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_jobs([make_job("old"), make_job("new", created_at=T + 200)])
    keep_all = RuntimeConfig(retain_events=0, retain_completed=0)
    assert event_service.apply_retention(store, keep_all, T + 10_000) == 0
    config = RuntimeConfig(retain_events=100, retain_completed=0)
    assert event_service.apply_retention(store, config, T + 250, max_batches=1) == 1
    assert [e.job_id for e in store.read_events()] == ["new"]


def test_numbers_never_go_back_even_when_everything_is_old(store: Store, make_job: Callable[..., Job]) -> None:
    store.insert_jobs([make_job("a"), make_job("b")])
    newest = store.read_events(0, 1, newest=True)[0].seq
    store.purge_events(T + 10_000, 100)  # all of them are old: the newest stays, as the numbering's floor
    store.insert_job(make_job("c", created_at=T + 1))
    assert [e.job_id for e in store.read_events(newest, 10)] == ["c"]
    assert store.read_events(newest, 10)[0].seq > newest


def test_a_delayed_job_and_a_retry_log_due_once_when_their_time_has_come(
    store: Store, make_job: Callable[..., Job]
) -> None:
    """``due`` is logged with the change it reports: the job joining the claimable ones (the
    first claim, by any worker, after its run_at), and only for a job that had to wait."""
    store.insert_jobs([make_job("now"), make_job("later", run_at=T + 10, max_retries=3)])
    assert [job.id for job in lifecycle.claim(store, "w1", None, T + 5, 30, 5)] == ["now"]
    assert ev.DUE not in kinds(store)
    job = claim_one(store, "w1", T + 12)
    assert job.id == "later"
    assert kinds(store, "later") == [ev.ENQUEUED, ev.DUE, ev.CLAIMED]
    (due,) = [e for e in store.read_events(0, 100) if e.kind == ev.DUE]
    assert (due.state, due.queue, due.data, due.at) == (PENDING, "default", {"run_at": T + 10}, T + 12)

    assert fail(store, job, T + 13, "")  # a retry at T + 15
    assert lifecycle.claim(store, "w1", None, T + 14, 30, 5) == []
    assert claim_one(store, "w2", T + 16).id == "later"
    assert lifecycle.claim(store, "w1", None, T + 17, 30, 5) == []
    assert kinds(store, "later") == [ev.ENQUEUED, ev.DUE, ev.CLAIMED, ev.FAILED_EVENT, ev.DUE, ev.CLAIMED]
    retry = [e for e in store.read_events(0, 100) if e.kind == ev.DUE][-1]
    assert (retry.state, retry.data, retry.at) == (FAILED, {"run_at": T + 15}, T + 16)
    assert kinds(store, "now") == [ev.ENQUEUED, ev.CLAIMED]  # due at once: nothing to report
