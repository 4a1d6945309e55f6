"""Issue 13 with real worker processes on a real SQLite file: every attempt on record, a killed
worker's attempt, ``events --follow`` through a burst and a restart, progress from a job."""

from __future__ import annotations

import json
import os
import queue as queues
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from .conftest import Queue, wait_until

FAST = {"heartbeat": 0.2, "lease": 2, "backoff_base": 1}


def test_a_job_failing_twice_then_completing_has_three_attempt_rows(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    counter = tmp_path / "runs"
    command = f'n=$(($(cat {counter} 2>/dev/null || echo 0) + 1)); echo $n > {counter}; echo "run $n"; [ $n -ge 3 ]'
    job_id = queue.enqueue(command, "--max-retries", "3")
    queue.start_workers("--concurrency", "2", count=2)
    queue.wait_state(job_id, "completed", 30)

    shown = queue.show(job_id)
    rows = shown["history"]
    assert [row["number"] for row in rows] == [1, 2, 3]
    assert [row["exit_code"] for row in rows] == [1, 1, 0]
    assert [row["ended"] for row in rows] == ["failed", "failed", "completed"]
    workers = {w.id for w in queue.running_workers()}
    claimed = [e for e in queue.store.read_events(0, 1000, job_id=job_id) if e.kind == "claimed"]
    assert [row["worker"] for row in rows] == [e.data["worker"] for e in claimed]  # the worker that took each
    assert {row["worker"] for row in rows} <= workers
    for number, row in enumerate(rows, start=1):
        assert row["pid"] > 0 and row["host"] and row["claimed_at"] <= row["started_at"] <= row["ended_at"]
        assert row["max_rss_kb"] > 0 and row["cpu_s"] >= 0
        attempt = queue.cli("logs", job_id, "--attempt", str(number)).stdout
        assert attempt == f"run {number}\n"
    assert queue.cli("logs", job_id, "--attempt", "4", check=False).returncode == 3  # no such attempt
    kinds = [e.kind for e in queue.store.read_events(0, 1000, job_id=job_id)]
    retried = ["failed", "due", "claimed"]  # each retry logs `due` when its time has come and a claim sees it
    assert kinds == ["enqueued", "claimed", *retried, *retried, "completed"]


def test_a_sigkilled_workers_attempt_is_recorded_as_lease_lost(queue: Queue) -> None:
    queue.config(**FAST)
    job_id = queue.enqueue("sleep 30", "--max-retries", "0")
    queue.start_workers()
    running = queue.wait_state(job_id, "processing", 15)
    victim = next(w for w in queue.running_workers() if w.id == running.locked_by)
    os.kill(victim.pid, signal.SIGKILL)  # the supervisor starts another, which recovers the lease

    queue.wait_state(job_id, "dead", 30)
    (row,) = queue.show(job_id)["history"]
    assert row["ended"] == "lease lost" and row["worker"] == victim.id
    assert "presumed dead" in row["error"]
    kinds = [e.kind for e in queue.store.read_events(0, 1000)]
    assert "lease_lost" in kinds and "worker_unresponsive" in kinds


class Follower:
    """``queuectl events --follow --json`` in the background, its lines collected as they come."""

    def __init__(self, queue: Queue, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "events", "--follow", "--json", *args],
            env=queue.env,
            cwd=queue.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        queue.extra_groups.append(self.proc.pid)
        self.lines: queues.Queue[str] = queues.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.put(line.decode())

    def take(self, count: int, timeout: float) -> list[dict[str, object]]:
        got: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            try:
                got.append(json.loads(self.lines.get(timeout=max(0.01, deadline - time.monotonic()))))
            except queues.Empty:
                break
        return got

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def test_events_follow_sees_a_burst_once_in_order_and_resumes_after_a_kill(queue: Queue) -> None:
    queue.config(**FAST)
    first = Follower(queue)
    time.sleep(1.0)  # started before the burst
    assert queue.enqueue_file([{"command": "true"} for _ in range(1000)]) == 1000
    supervisor = queue.start_workers("--burst", "--concurrency", "4", count=2, wait_ready=False)

    seen = first.take(1500, timeout=60)
    assert len(seen) == 1500
    first.kill()  # mid-burst
    resumed = Follower(queue, "--since", str(seen[-1]["seq"]))
    queue.wait_exit(supervisor, 90)
    wait_until(lambda: queue.counts().get("completed") == 1000, 10, message=lambda: str(queue.counts()))
    logged = [e.seq for e in queue.store.read_events(0, 100_000)]
    seen += resumed.take(len(logged) - len(seen), timeout=60)
    resumed.kill()

    assert [e["seq"] for e in seen] == logged  # every event exactly once, in order, across the restart
    kinds = [e["kind"] for e in seen]
    assert kinds.count("enqueued") == 1000 and kinds.count("claimed") == 1000 and kinds.count("completed") == 1000


def test_progress_written_by_a_job_appears_in_show_json(queue: Queue) -> None:
    queue.config(**FAST)
    report = f"{sys.executable} -m queuectl progress 40/100 resizing"
    job_id = queue.enqueue(f"echo garbage >&3; printf '{{\"done\": 1e999}}\\n' >&3; {report}; sleep 4; echo done")
    queue.start_workers()

    def reported() -> dict[str, object] | None:
        progress = queue.show(job_id)["progress"]
        return progress if progress and progress["percent"] == 40 else None

    progress = wait_until(reported, 20, message=lambda: f"progress of {job_id}: {queue.show(job_id)}")
    assert progress["message"] == "resizing" and progress["total"] == 100
    assert any(e.kind == "progress" for e in queue.store.read_events(0, 100, job_id=job_id))
    done = queue.wait_state(job_id, "completed", 20)  # the garbage harmed nothing
    assert done.output.endswith("done\n")
    assert "progress" in queue.cli("show", job_id).stdout
