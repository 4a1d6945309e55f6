"""Issue 11 #7, #8 and #15 at the supervisor: a stopped worker, ``setsid`` children of a job, a
worker that found the database damaged, and the database URL kept out of workers' environments.

Real processes: a supervisor in its own session, its workers, and the jobs' shells.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from shlex import quote

from .conftest import Queue, pid_alive, read_pid, wait_until


def test_a_job_that_stops_its_worker_still_completes(queue: Queue) -> None:
    queue.start_workers(count=1)
    job_id = queue.enqueue("kill -STOP $PPID; sleep 1; echo done")
    job = queue.wait_state(job_id, ("completed", "failed", "dead"), timeout=10)  # before: frozen forever
    assert job.state == "completed" and job.exit_code == 0, job
    assert "done" in (job.output or "")
    assert queue.logs().count("was stopped (SIGSTOP); resuming it") == 1, queue.logs()


def _setsid_job(queue: Queue, tmp_path: Path, rest: str, *options: str) -> tuple[str, int]:
    pid_file = tmp_path / f"escaped-{time.monotonic_ns()}.pid"
    job_id = queue.enqueue(f"setsid sleep 300 & echo $! > {quote(str(pid_file))}; {rest}", *options)
    escaped = wait_until(lambda: read_pid(pid_file), 15, message=lambda: f"the job wrote its pid\n{queue.logs()}")
    return job_id, escaped


def test_setsid_children_end_with_their_job(queue: Queue, tmp_path: Path) -> None:
    queue.start_workers(count=1)
    job_id, escaped = _setsid_job(queue, tmp_path, "sleep 0.2")
    job = queue.wait_state(job_id, ("completed", "failed", "dead"), timeout=15)
    assert job.state == "completed", job
    # before: the sleep lived on (its own session: the group kill missed it)
    wait_until(lambda: not pid_alive(escaped), 5, message=f"the setsid sleep {escaped} gone")


def test_setsid_children_end_with_a_timed_out_job(queue: Queue, tmp_path: Path) -> None:
    queue.config(kill_grace=1)
    queue.start_workers(count=1)
    job_id, escaped = _setsid_job(queue, tmp_path, "sleep 60", "--timeout", "1", "--max-retries", "0")
    job = queue.wait_state(job_id, ("failed", "dead"), timeout=15)
    assert "timeout" in (job.last_error or ""), job
    wait_until(lambda: not pid_alive(escaped), 5, message=f"the setsid sleep {escaped} gone")


def test_a_running_jobs_setsid_child_is_spared_when_another_job_ends(queue: Queue, tmp_path: Path) -> None:
    queue.start_workers("--concurrency", "2", count=1)
    long_id, kept = _setsid_job(queue, tmp_path, "sleep 4")
    short_id = queue.enqueue("sleep 0.3")
    queue.wait_state(short_id, "completed", timeout=15)
    time.sleep(1.5)  # a periodic sweep has run meanwhile, too
    assert pid_alive(kept), "the running job's setsid child was killed when another job ended"
    queue.wait_state(long_id, "completed", timeout=15)
    wait_until(lambda: not pid_alive(kept), 5, message=f"the setsid sleep {kept} gone once its job ended")


def _environ(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return handle.read()


def test_workers_do_not_hold_the_database_url_in_their_environment(queue: Queue, tmp_path: Path) -> None:
    marker = queue.db_path.name  # the test's own folder: a distinctive path
    assert str(tmp_path) in queue.url and marker in queue.url
    out = tmp_path / "environ.txt"
    queue.start_workers(count=1)
    worker_pid = queue.running_workers()[0].pid
    assert queue.url.encode() not in _environ(worker_pid)  # before: QUEUECTL_DB=<url>
    job_id = queue.enqueue(f"tr '\\0' '\\n' < /proc/$PPID/environ > {quote(str(out))}")
    queue.wait_state(job_id, "completed", timeout=15)
    text = out.read_text()
    assert text and queue.url not in text and str(queue.db_path) not in text, text


def test_detached_workers_do_not_hold_the_database_url_either(queue: Queue, tmp_path: Path) -> None:
    log = tmp_path / "detached.log"
    queue.add_log(log)
    out = queue.cli("worker", "start", "--detach", "--log", str(log)).stdout
    supervisor_pid = int(out.split("supervisor pid ")[1].split(")")[0])
    queue.extra_groups.append(supervisor_pid)
    workers = wait_until(queue.running_workers, 15, message=lambda: f"a detached worker\n{queue.logs()}")
    for pid in (supervisor_pid, workers[0].pid):
        assert queue.url.encode() not in _environ(pid), pid
    job_id = queue.enqueue("true")
    queue.wait_state(job_id, "completed", timeout=15)
    queue.cli("worker", "stop", "--wait", "--timeout", "20")
    wait_until(lambda: not pid_alive(supervisor_pid), 10, message="the detached supervisor exited")


def test_a_worker_that_finds_the_database_damaged_is_not_restarted(queue: Queue, tmp_path: Path) -> None:
    trigger = tmp_path / "corrupt-now"
    queue.env["QUEUECTL_TEST_FAULT"] = f"exit-corrupt:{trigger}"  # the worker that removes it exits 7
    supervisor = queue.start_workers(count=2)
    worker_pids = [w.pid for w in queue.running_workers()]
    trigger.touch()
    code = queue.wait_exit(supervisor, timeout=15)  # before: restarted in 0.5s, again and again
    assert code == 7, queue.logs()
    logs = queue.logs()
    assert logs.count("the database is damaged: not restarting") == 1, logs
    assert "restarting in" not in logs, logs
    assert not any(pid_alive(pid) for pid in worker_pids), logs
    assert os.path.exists(trigger) is False
