"""Scheduling control with real worker processes: priority order, delays, cancel of a running job,
paused queues, and queue order per worker."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from .conftest import Queue, pid_alive, read_pid, wait_until

FAST = {"heartbeat": 0.2, "lease": 2}


def test_single_worker_runs_jobs_by_priority_then_fifo(queue: Queue, tmp_path: Path) -> None:
    # Given jobs of mixed priority enqueued before any worker runs
    ledger = tmp_path / "order.txt"
    specs = [("low-1", 0), ("high-1", 10), ("low-2", 0), ("mid-1", 5), ("high-2", 10), ("neg", -3)]
    queue.enqueue_file(
        [{"id": job_id, "command": f"echo {job_id} >> {ledger}", "priority": prio} for job_id, prio in specs]
    )

    # When one worker with one slot drains the queue
    proc = queue.start_workers("--burst", wait_ready=False)
    assert queue.wait_exit(proc, 20) == 0

    # Then higher priorities ran first and equal priorities in enqueue order
    assert ledger.read_text().split() == ["high-1", "high-2", "mid-1", "low-1", "low-2", "neg"]


def test_delayed_job_is_not_claimed_before_its_time(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    marker = tmp_path / "ran-at"
    enqueued = time.time()
    job_id = queue.enqueue(f"date +%s.%N > {marker}", "--delay", "2s")
    queue.start_workers()

    job = queue.wait_state(job_id, "completed", 15)
    ran_at = float(marker.read_text())
    assert ran_at >= enqueued + 2.0
    assert job.started_at >= job.run_at


def test_cancel_of_a_running_job_kills_it_within_a_heartbeat(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    pid_file = tmp_path / "pid"
    job_id = queue.enqueue(f"echo $$ > {pid_file}; sleep 60")
    other = queue.enqueue("true")  # queued after: proves the worker goes on working
    queue.start_workers()
    wait_until(lambda: read_pid(pid_file), 10, message="the job to start")
    pid = read_pid(pid_file)
    assert pid is not None and pid_alive(pid)

    cancelled = queue.cli("cancel", job_id)

    assert cancelled.stdout.strip() == f"cancelled {job_id}"
    wait_until(lambda: not pid_alive(pid), 3, message="the cancelled job's process to die")
    queue.wait_state(other, "completed", 10)
    job = queue.job(job_id)
    assert job.state == "cancelled"  # the killed run wrote nothing over it
    again = queue.cli("cancel", job_id, check=False)
    assert again.returncode == 4 and "already finished" in again.stderr


@pytest.mark.parametrize("backend", ["queue", "pg_queue"])
@pytest.mark.parametrize("how", [("cancel",), ("cancel", "--all", "--yes")])
def test_a_cancelled_running_job_is_killed_at_once_not_at_the_next_heartbeat(
    backend: str, how: tuple[str, ...], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Before: the worker learnt of the cancel from its next lease renewal, up to a heartbeat (5 s
    by default, 30 s here) later, and the command ran on until then. One cancel and a bulk one,
    with two workers, on SQLite and PostgreSQL (the MongoDB store's wake-ups carry no stop)."""
    queue: Queue = request.getfixturevalue(backend)
    queue.config(lease=60, heartbeat=30)
    supervisor = queue.start_workers("--count", "2")
    pid_file = tmp_path / "pid"
    job_id = queue.enqueue(f"echo $$ > {pid_file}; exec sleep 60")
    pid = wait_until(lambda: read_pid(pid_file), 15, message="the job to start")
    queue.wait_state(job_id, "processing", 5)

    queue.cli(*how, *([job_id] if len(how) == 1 else []))

    wait_until(lambda: not pid_alive(pid), 3, message="the cancelled job's process to die")
    assert queue.job(job_id).state == "cancelled"
    supervisor.send_signal(signal.SIGTERM)
    assert queue.wait_exit(supervisor, 10) == 0


def test_paused_queue_is_not_drained_until_resumed(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    queue.cli("queue", "pause", "builds", "--create")  # before its first job
    build = queue.enqueue("true", "--queue", "builds")
    default = queue.enqueue("true")
    queue.start_workers()

    queue.wait_state(default, "completed", 10)
    time.sleep(1.0)  # several poll intervals: a paused queue must stay untouched
    assert queue.state(build) == "pending"
    listed = {row["name"]: row for row in queue.cli_json("queue", "list")}
    assert listed["builds"]["paused"] is True and listed["builds"]["states"]["pending"] == 1

    queue.cli("queue", "resume", "builds")
    queue.wait_state(build, "completed", 10)


def test_worker_serves_its_queues_in_the_order_given(queue: Queue, tmp_path: Path) -> None:
    ledger = tmp_path / "order.txt"
    queue.enqueue_file(
        [{"id": f"d{i}", "command": f"echo d{i} >> {ledger}", "priority": 100} for i in range(2)]
        + [{"id": f"b{i}", "command": f"echo b{i} >> {ledger}", "queue": "builds"} for i in range(2)]
        + [{"id": "ignored", "command": f"echo x >> {ledger}", "queue": "other"}]
    )
    proc = queue.start_workers("--burst", "--queue", "builds,default", wait_ready=False)
    assert queue.wait_exit(proc, 20) == 0
    # builds first although default's jobs have a higher priority; 'other' is not served
    assert ledger.read_text().split() == ["b0", "b1", "d0", "d1"]
    assert queue.state("ignored") == "pending"
