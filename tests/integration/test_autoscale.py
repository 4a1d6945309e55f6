"""``worker start --count MIN..MAX`` (issue 15) with real processes: a burst of slow jobs grows the
supervisor to MAX workers, and once the queue has drained it retires them back to MIN, no job
lost or run twice (checked with the ledger the jobs write). ``--log-format json``: every line a
JSON object, with the events of a job that fails, then completes.

Timings are short but the assertions are on eventual states with generous deadlines: the machine
may be loaded."""

from __future__ import annotations

import json
import signal

import pytest

from .conftest import Queue, wait_until
from .ledger import check_invariants, ledger_command

SCALE = ("--count", "1..3", "--scale-lag", "0.3", "--scale-cooldown", "0.3", "--scale-idle", "1.5")


def our_workers(q: Queue) -> list[str]:
    return sorted(w.scale for w in q.running_workers())


@pytest.mark.parametrize("backend", ["queue", "pg_queue"])
def test_a_burst_grows_the_workers_to_max_and_an_idle_queue_shrinks_them_to_min(
    backend: str, request: pytest.FixtureRequest
) -> None:
    q: Queue = request.getfixturevalue(backend)
    ledger = str(q.root / "ledger")
    jobs = 12
    specs = [{"id": f"s{n}", "command": ledger_command(ledger, f"s{n}", "sleep 1.5")} for n in range(jobs)]
    assert q.enqueue_file(specs) == jobs
    proc = q.start_workers(*SCALE, count=1)
    wait_until(lambda: len(q.running_workers()) == 3, 60, message=lambda: f"3 workers\n{q.logs()}")
    assert our_workers(q) == ["1..3"] * 3  # each row names its supervisor's range
    listed = q.cli_json("worker", "list")
    assert {w["scale"] for w in listed} == {"1..3"}
    scaling = q.cli_json("status", "--json")["workers"]["autoscaling"]
    assert [(s["scale"], s["alive"]) for s in scaling] == [("1..3", 3)]
    wait_until(lambda: q.counts().get("completed", 0) == jobs, 120, message=lambda: f"{q.counts()}\n{q.logs()}")
    wait_until(lambda: len(q.running_workers()) == 1, 60, message=lambda: f"back to 1 worker\n{q.logs()}")
    # the supervisor logs a retirement when it reaps the worker, a moment after the worker's row
    # says stopped: wait for that line instead of racing it
    wait_until(lambda: "retired: scaled down" in q.logs(), 15, message=lambda: f"a retirement logged\n{q.logs()}")
    check_invariants(q.store, ledger, lease=30.0)  # none lost, none run twice
    proc.send_signal(signal.SIGTERM)
    assert q.wait_exit(proc, 60) == 0


def test_a_retiring_worker_finishes_its_running_job(queue: Queue) -> None:
    """Scaled down while a job of its runs (it claimed one just before the signal): the job ends
    by itself, it is not stopped and requeued."""
    q = queue
    ledger = str(q.root / "ledger")
    q.config(**{"shutdown-grace": "0"})  # a stop would kill at once: retiring must not
    specs = [{"id": f"r{n}", "command": ledger_command(ledger, f"r{n}", "sleep 2")} for n in range(4)]
    assert q.enqueue_file(specs) == 4
    proc = q.start_workers(*SCALE, count=1)
    wait_until(lambda: q.counts().get("completed", 0) == 4, 120, message=lambda: f"{q.counts()}\n{q.logs()}")
    wait_until(lambda: len(q.running_workers()) == 1, 60, message=lambda: f"back to 1 worker\n{q.logs()}")
    check_invariants(q.store, ledger, lease=30.0)
    assert "term" not in (q.root / "ledger").read_text()  # no run was stopped by SIGTERM
    proc.send_signal(signal.SIGTERM)
    assert q.wait_exit(proc, 60) == 0


def test_json_logs_are_one_object_a_line_with_the_events_of_a_failed_then_completed_job(queue: Queue) -> None:
    q = queue
    q.config(**{"backoff-base": "1", "backoff-jitter": "0"})
    marker = q.root / "second-run"
    job = q.enqueue(f"if [ -e {marker} ]; then echo ok; else touch {marker}; exit 3; fi", "--max-retries", "2")
    proc = q.start_workers("--log-format", "json", count=1)
    q.wait_state(job, "completed", 60)
    proc.send_signal(signal.SIGTERM)
    assert q.wait_exit(proc, 60) == 0
    lines = [line for line in q.logs().splitlines() if line and not line.startswith("--- ")]
    records = [json.loads(line) for line in lines]  # every line parses
    for record in records:
        assert {"time", "worker", "job", "event", "message"} <= set(record), record
        assert record["time"].endswith("Z") and record["time"][10] == "T"
    ours = [r for r in records if r["job"] == job]
    assert [r["event"] for r in ours] == ["job_started", "job_finished", "job_started", "job_finished"]
    failed, completed = ours[1], ours[3]
    assert (failed["state"], failed["exit_code"], failed["attempt"], failed["queue"]) == ("failed", 3, 1, "default")
    assert failed["error"] == "exit code 3" and failed["retry_in"] >= 0
    assert (completed["state"], completed["exit_code"], completed["attempt"]) == ("completed", 0, 2)
    assert completed["duration"] >= 0
    events = {r["event"] for r in records}
    assert {"supervisor_started", "worker_started", "worker_stopping", "worker_stopped", "supervisor_stopped"} <= events
    assert {r["worker"] for r in ours} <= {r["worker"] for r in records if r["event"] == "worker_started"}
