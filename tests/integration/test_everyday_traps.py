"""Everyday traps (issue 14) with real processes: a closed terminal, ``--burst`` that leaves work
behind, and worker rows that lag or lie about a dead worker."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import Queue, pid_alive, read_pid, wait_until

FAST = {"heartbeat": 0.5, "lease": 2, "backoff_base": 1.5, "poll_interval": 0.2}


def test_closing_the_terminal_stops_workers_gracefully_and_leaves_no_job_behind(queue: Queue, tmp_path: Path) -> None:
    """Before: the supervisor died of EIO on stderr within a second, the job's shell lived on
    (re-parented to PID 1) and the job stayed processing until another worker re-ran it."""
    queue.config(shutdown_grace=2, kill_grace=1)
    pid_file = tmp_path / "job.pid"
    job_id = queue.enqueue(f"echo $$ > {pid_file}; sleep 60")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: `queuectl worker start` in a terminal of its own, as from a shell
        try:
            os.execve(sys.executable, [sys.executable, "-m", "queuectl", "worker", "start"], queue.env)
        finally:
            os._exit(127)
    try:
        job_pid = wait_until(lambda: read_pid(pid_file), 20, message="the job started")
        queue.wait_state(job_id, "processing", 5)
        os.close(terminal)  # the terminal goes away: SIGHUP, then EIO on every write to it
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline and status is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
            time.sleep(0.05)
        assert status is not None, "the supervisor is still running 20 s after the terminal closed"
        assert os.waitstatus_to_exitcode(status) == 0  # a graceful stop, not a crash
        wait_until(lambda: not pid_alive(job_pid), 5, message="the job's shell to end with its worker")
        job = queue.job(job_id)
        # stopped after shutdown-grace and handed back, not left processing for a duplicate run
        assert job.state == "pending" and job.attempts == 0 and job.locked_by is None, job
        assert not queue.running_workers()
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_burst_runs_a_retry_due_soon_and_the_hook_then_says_what_it_left(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    flag, hook = tmp_path / "flag", tmp_path / "hook.txt"
    flaky = queue.enqueue(
        f"test -f {flag} || {{ touch {flag}; exit 1; }}",
        "--on-finish",
        f'echo "$QUEUECTL_JOB_STATE" > {hook}',
    )
    queue.enqueue("echo later", "--delay", "10m")
    proc = queue.start_workers("--burst", wait_ready=False)
    assert queue.wait_exit(proc, 30) == 0
    job = queue.job(flaky)
    assert (job.state, job.attempts, job.hook_state) == ("completed", 2, "done"), queue.logs()
    assert hook.read_text() == "completed\n"
    log = queue.logs()
    # one line per finished job, and what was left for later
    assert f"job {flaky} failed (exit code 1" in log and "retry in" in log, log
    assert f"job {flaky} completed (exit code 0" in log, log
    assert "left 1 job delayed (the next is due in 9m" in log, log


def test_burst_names_a_retry_it_leaves_for_later(queue: Queue) -> None:
    queue.config(**{**FAST, "backoff_base": 60})  # the retry is due in a minute: past the window
    job_id = queue.enqueue("exit 3")
    proc = queue.start_workers("--burst", wait_ready=False)
    assert queue.wait_exit(proc, 30) == 0
    assert queue.state(job_id) == "failed"
    assert "left 1 job whose retry is due in " in queue.logs(), queue.logs()


def worker_rows(queue: Queue) -> dict[str, dict[str, object]]:
    listed = queue.cli("worker", "list", "--json").stdout
    return {row["id"]: row for row in json.loads(listed)}


def test_a_sigkilled_worker_is_shown_dead_at_once(queue: Queue) -> None:
    queue.config(lease=30, heartbeat=5)  # its lease would keep it "alive" for half a minute
    supervisor = queue.start_workers()
    (worker,) = queue.running_workers()
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    row = wait_until(
        lambda: (r := worker_rows(queue).get(worker.id)) is not None and r["state"] == "dead" and r,
        10,
        message=lambda: f"worker {worker.id} shown dead: {worker_rows(queue)}\n{queue.logs()}",
    )
    assert time.monotonic() - killed_at < 10 and row["alive"] is False
    alive = [r["id"] for r in worker_rows(queue).values() if r["alive"]]
    assert worker.id not in alive
    status = json.loads(queue.cli("status", "--json").stdout)
    assert status["workers"]["alive"] <= 1  # at most its replacement, never the dead one
    supervisor.send_signal(signal.SIGTERM)
    assert queue.wait_exit(supervisor, 20) == 0


def test_worker_rows_show_a_claimed_job_without_waiting_for_a_heartbeat(queue: Queue, tmp_path: Path) -> None:
    queue.config(lease=60, heartbeat=30)  # a heartbeat would come 30 s later
    supervisor = queue.start_workers()
    started = tmp_path / "started"
    job_id = queue.enqueue(f"touch {started}; sleep 30")
    wait_until(started.exists, 10, message="the job started")
    seen = wait_until(
        lambda: any(job_id in row["current_jobs"] for row in worker_rows(queue).values()),  # type: ignore[operator]
        3,
        message=lambda: f"a worker row naming {job_id}: {worker_rows(queue)}",
    )
    assert seen
    queue.cli("cancel", job_id)
    supervisor.send_signal(signal.SIGTERM)
    assert queue.wait_exit(supervisor, 40) == 0


def test_detached_supervisor_log_survives_a_closed_log_reader(queue: Queue, tmp_path: Path) -> None:
    """A supervisor whose stderr is a pipe nobody reads any more (EPIPE) goes on as well."""
    reader, writer = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "worker", "start"],
        env=queue.env,
        stdin=subprocess.DEVNULL,
        stdout=writer,
        stderr=writer,
        start_new_session=True,
    )
    os.close(writer)
    queue.supervisors.append(proc)  # type: ignore[arg-type]
    wait_until(lambda: queue.running_workers(), 15, message="a worker registered")
    os.close(reader)  # from now on every log line fails with EPIPE
    job_id = queue.enqueue("true")
    queue.wait_state(job_id, "completed", 15)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
