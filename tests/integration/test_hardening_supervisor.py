"""Issue 11 #4 and #6: workers die with their supervisor, and ``worker stop`` beats a pending restart.

Real processes: a supervisor in its own session, its workers, and a job's ``sleep``.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from pathlib import Path

from .conftest import Queue, pid_alive, wait_until


def _proc_cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_sigkilled_supervisor_takes_its_workers_and_their_jobs_along(queue: Queue, tmp_path: Path) -> None:
    queue.config(shutdown_grace=1, kill_grace=1)
    supervisor = queue.start_workers(count=2)
    worker_pids = [w.pid for w in queue.running_workers()]
    assert len(worker_pids) == 2
    job_id = queue.enqueue("sleep 300")
    queue.wait_state(job_id, "processing", timeout=15)
    sleeps = wait_until(
        lambda: [pid for pid in queue.leftovers() if _proc_cmdline(pid).startswith(b"sleep\x00300")],
        10,
        message="the job's sleep is running",
    )
    os.kill(supervisor.pid, signal.SIGKILL)  # only the supervisor: its workers are on their own now
    supervisor.wait(timeout=5)
    wait_until(
        lambda: not any(pid_alive(pid) for pid in worker_pids + sleeps),
        8,
        message=lambda: (
            "workers and the job's sleep gone; alive: "
            f"{[pid for pid in worker_pids + sleeps if pid_alive(pid)]}\n{queue.logs()}"
        ),
    )
    # observed before: both workers lived on with ppid 1, one of them still running the job
    job = queue.wait_state(job_id, "pending", timeout=5)  # stopped and handed back, not failed
    assert job.attempts == 0, job


def test_worker_stop_during_a_pending_restart_stops_the_supervisor(queue: Queue, tmp_path: Path) -> None:
    supervisor = queue.start_workers(count=1)
    killed: set[int] = set()
    for delay in ("0.5s", "1s", "2s", "4s"):  # each quick death doubles the next restart delay
        pid = wait_until(
            lambda: next((w.pid for w in queue.running_workers() if w.pid not in killed and pid_alive(w.pid)), None),
            15,
            message=lambda: f"a new worker registered\n{queue.logs()}",
        )
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
        announced = f"restarting in {delay}"
        wait_until(lambda: announced in queue.logs(), 10, message=f"{announced!r} logged")  # noqa: B023
    # the worker crashed just before the stop request; its replacement is due in 4 s
    asked = queue.cli("worker", "stop").stdout
    assert "asked" in asked, asked
    assert queue.wait_exit(supervisor, 3.0) == 0  # observed: replaced, kept claiming, never exited
    assert "not restarted: a stop was requested" in queue.logs()
    assert not [w for w in queue.running_workers() if w.pid not in killed]


def test_the_detached_workers_log_is_private_even_if_it_existed(queue: Queue, tmp_path: Path) -> None:
    # Given a log file an earlier version created world-readable (it names jobs and their errors)
    log = tmp_path / "workers.log"
    log.write_bytes(b"")
    log.chmod(0o644)
    queue.add_log(log)
    out = queue.cli("worker", "start", "--detach", "--burst", "--log", str(log)).stdout
    match = re.search(r"supervisor pid (\d+)", out)
    assert match, out
    queue.extra_groups.append(int(match.group(1)))
    # Then it is 0600 from the start, and a fresh one too
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.log"
    queue.add_log(fresh)
    out = queue.cli("worker", "start", "--detach", "--burst", "--log", str(fresh)).stdout
    queue.extra_groups.append(int(re.search(r"supervisor pid (\d+)", out).group(1)))  # type: ignore[union-attr]
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    wait_until(lambda: not queue.leftovers(), 10, message=lambda: f"burst workers gone: {queue.leftovers()}")


def test_a_new_worker_start_reports_and_retires_workers_that_died_without_stopping(queue: Queue) -> None:
    import socket
    import subprocess
    import time

    from queuectl.core.models import WorkerInfo
    from queuectl.service import workers as worker_service

    # Given a worker of an earlier run whose process is gone (its supervisor was SIGKILLed)
    gone = subprocess.Popen(["true"])
    gone.wait()
    now = time.time()
    worker_service.register_worker(
        queue.store,
        WorkerInfo(
            id="w-old",
            host=socket.gethostname(),
            pid=gone.pid,
            state="running",
            started_at=now - 60,
            last_heartbeat=now - 30,
        ),
    )
    # When workers are started again
    started = queue.cli("worker", "start", "--burst", check=False)
    # Then the dead one is named, and no longer counts as running (stopped: the new workers forget it)
    assert started.returncode == 0, started.stderr
    assert f"pids {gone.pid}" in started.stderr and "died without stopping" in started.stderr
    states = {w["id"]: w["state"] for w in queue.cli_json("worker", "list", "--all")}
    assert states.get("w-old", "stopped") == "stopped"
