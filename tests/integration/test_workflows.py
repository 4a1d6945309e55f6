"""Workflows with real worker processes: dependency chains, cancelled subtrees, compensation,
cron schedules fired by several workers, unique keys under racing enqueues, hooks and wait."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path

from .conftest import Queue, wait_until

FAST = {"heartbeat": 0.2, "lease": 2}


def test_three_level_chain_runs_in_order(queue: Queue, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    # Given a chain enqueued leaf-last, and a fan-in: report waits for parse and lint
    queue.enqueue(f"sleep 0.3; echo fetch >> {ledger}", "--id", "fetch")
    queue.enqueue(f"echo parse >> {ledger}", "--id", "parse", "--after", "fetch")
    queue.enqueue(f"echo lint >> {ledger}", "--id", "lint")
    queue.enqueue(f"echo report >> {ledger}", "--id", "report", "--after", "parse", "--after", "lint")
    assert queue.state("parse") == "waiting" and queue.state("report") == "waiting"
    status = queue.cli_json("status")
    assert status["states"]["waiting"] == 2

    # When three workers run
    queue.start_workers("--burst", count=3, wait_ready=False)
    done = queue.cli("wait", "report", "--timeout", "30s")

    # Then each ran after its parents, and wait reports success
    assert done.returncode == 0
    order = ledger.read_text().split()
    assert sorted(order) == ["fetch", "lint", "parse", "report"]
    assert order.index("fetch") < order.index("parse") < order.index("report")
    assert order.index("lint") < order.index("report")


def test_dead_parent_cancels_its_whole_subtree_and_runs_compensation(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    ledger = tmp_path / "ledger.txt"
    queue.enqueue("exit 3", "--id", "deploy", "--max-retries", "0")
    queue.enqueue(f"echo migrate >> {ledger}", "--id", "migrate", "--after", "deploy")
    queue.enqueue(f"echo announce >> {ledger}", "--id", "announce", "--after", "migrate")
    queue.enqueue(f"echo undo >> {ledger}", "--id", "undo", "--on-failure-of", "deploy")
    queue.start_workers()

    waited = queue.cli("wait", "deploy", "--timeout", "20s", check=False)
    assert waited.returncode == 20  # dead
    queue.wait_state("undo", "completed", 10)
    for job_id, parent in (("migrate", "deploy"), ("announce", "migrate")):
        job = queue.wait_state(job_id, "cancelled", 5)
        assert parent in job.last_error
    assert ledger.read_text().split() == ["undo"]
    assert queue.cli("wait", "announce", check=False).returncode == 21  # cancelled


def test_compensation_is_skipped_when_its_parent_completes(queue: Queue) -> None:
    queue.enqueue("true", "--id", "deploy")
    queue.enqueue("true", "--id", "undo", "--on-failure-of", "deploy")
    queue.start_workers("--burst", wait_ready=False)
    job = queue.wait_state("undo", "cancelled", 15)
    assert "not needed" in job.last_error


def test_schedule_fires_exactly_once_per_fire_time_with_three_workers(queue: Queue) -> None:
    queue.config(**FAST)
    # Given a schedule firing every second, served by three worker processes
    queue.cli("schedule", "add", "tick", "* * * * * *", "true")
    queue.start_workers(count=3)

    # When it runs for a few seconds
    time.sleep(4.5)
    queue.cli("schedule", "pause", "tick")
    time.sleep(0.5)

    # Then each fire time enqueued at most one job, with its slot in the id: no slot twice. Slots
    # may be skipped: when no worker got to the schedule for a while (a loaded machine), the
    # fire times missed meanwhile collapse into one catch-up job by design (service/schedules.py).
    jobs = [job for job in queue.store.list_jobs(limit=1000) if job.schedule == "tick"]
    slots = sorted(job.id for job in jobs)
    assert len(slots) == len(set(slots)) >= 3
    stamps = [int(slot.rsplit("T", 1)[1]) for slot in slots]
    seconds = [int(s[:2]) * 3600 + int(s[2:4]) * 60 + int(s[4:]) for s in (f"{x:06d}" for x in stamps)]
    assert seconds == sorted(set(seconds))  # one job per fire time, each a whole second
    wait_until(lambda: all(queue.state(job.id) == "completed" for job in jobs), 10, message="ticks to run")


def test_racing_enqueues_with_one_unique_key_accept_exactly_one(queue: Queue) -> None:
    def enqueue() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queuectl", "enqueue", "sleep 5", "--unique-key", "sync"],
            env=queue.env,
            cwd=queue.root,
            capture_output=True,
            text=True,
            timeout=60,
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: enqueue(), range(8)))

    accepted = [r for r in results if r.returncode == 0]
    refused = [r for r in results if r.returncode == 4]
    assert len(accepted) == 1 and len(refused) == 7, [(r.returncode, r.stderr) for r in results]
    holder = accepted[0].stdout.strip()
    assert all(holder in r.stderr and "unique key 'sync'" in r.stderr for r in refused)
    # once the holder has finished, the key is free again
    queue.cli("cancel", holder)
    assert queue.cli("enqueue", "true", "--unique-key", "sync").returncode == 0


def test_on_finish_hook_runs_with_the_outcome_and_cannot_change_it(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    hooks = tmp_path / "hooks.txt"
    hook = f'echo "$QUEUECTL_JOB_ID $QUEUECTL_JOB_STATE $QUEUECTL_EXIT_CODE" >> {hooks}'
    queue.enqueue("true", "--id", "ok", "--on-finish", hook)
    queue.enqueue("exit 4", "--id", "bad", "--max-retries", "0", "--on-finish", hook)
    queue.enqueue("true", "--id", "broken-hook", "--on-finish", "echo oops; exit 9")
    queue.start_workers()

    wait_until(lambda: hooks.exists() and len(hooks.read_text().splitlines()) == 2, 15, message="both hooks to run")
    assert sorted(hooks.read_text().splitlines()) == ["bad dead 4", "ok completed 0"]
    job = wait_until(
        lambda: (j := queue.job("broken-hook")) and j.hook_state == "failed" and j,
        15,
        message="the failing hook to be recorded",
    )
    assert job.state == "completed" and "exited with 9" in job.hook_error
    assert queue.running_workers(), "a failing hook must not crash the worker"


def test_wait_times_out_with_its_own_exit_code(queue: Queue) -> None:
    job_id = queue.enqueue("true", "--delay", "1h")
    started = time.monotonic()
    result = queue.cli("wait", job_id, "--timeout", "0.5s", check=False)
    assert result.returncode == 22
    assert time.monotonic() - started < 10
    assert queue.cli("wait", "nope", check=False).returncode == 3
