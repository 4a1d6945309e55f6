"""The pure pieces behind issue 14: JSON shapes, column fitting, what a burst worker says, and a
log line that survives a closed terminal."""

from __future__ import annotations

import os
import subprocess
import sys

from queuectl.cli.output import Column, fit_columns
from queuectl.core.config import RuntimeConfig
from queuectl.core.models import STATES, Job, Outcome, WorkerInfo
from queuectl.runtime.burst import Leftover
from queuectl.runtime.slots import finished_line
from queuectl.service import shapes
from queuectl.service.queues import QueueRow


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert shapes.rfc3339(1_796_116_337.1239) == "2026-12-01T09:12:17.123Z"
    assert shapes.rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert shapes.rfc3339(None) is None


def test_one_job_shape_with_and_without_the_output() -> None:
    job = Job(id="a", command="true", output="x" * 100, created_at=1.5, updated_at=2.0, run_at=1.5)
    full, listed = shapes.job_json(job, waits={}), shapes.jobs_json([job], {})[0]
    assert full["output"] == "x" * 100 and "output" not in listed
    assert {key: value for key, value in full.items() if key != "output"} == listed
    assert full["created_at"] == "1970-01-01T00:00:01.500Z" and full["started_at"] is None
    assert set(full) == set(Job.__dataclass_fields__) | {"progress"}  # and the progress it reported


def test_queue_and_status_shapes_have_every_state() -> None:
    rows = [
        QueueRow("a", False, {"dead": 1, "completed": 3}),
        QueueRow("b", False, {"pending": 2}, limit=2, rate="10/m"),
        QueueRow("c", True, {}),
    ]
    status = shapes.status_json(rows, 1, 2)
    assert status["total"] == 6 and status["paused"] == ["c"]
    assert [q["name"] for q in status["queues"]] == ["a", "b", "c"]
    assert all(list(q["states"]) == list(STATES) for q in status["queues"])
    assert status["queues"][2] == {"name": "c", "paused": True, "states": dict.fromkeys(STATES, 0), "total": 0}
    assert (status["queues"][1]["limit"], status["queues"][1]["rate"]) == (2, "10/m")  # as queue list --json
    assert "limit" not in status["queues"][0] and "rate" not in status["queues"][0]


def test_config_values_are_numbers() -> None:
    items = [("max-retries", "5", False, ""), ("backoff-base", "1.5", False, ""), ("lease", "garbage", False, "")]
    assert shapes.config_json("sqlite:///q.db", items) == {
        "database": "sqlite:///q.db",
        "max-retries": 5,
        "backoff-base": 1.5,
        "lease": 30,  # a hand-written value that does not parse reads as the default, as workers do
    }


def test_worker_liveness() -> None:
    config, now = RuntimeConfig(lease=30), 1000.0
    worker = WorkerInfo("w", "h", 1, "running", 0.0, now - 5)
    assert shapes.worker_json(worker, config, now)["state"] == "running"
    worker.last_heartbeat = now - 31
    assert shapes.worker_json(worker, config, now) | {"heartbeat_age": 0} == shapes.worker_json(worker, config, now) | {
        "state": "unresponsive",
        "alive": False,
        "heartbeat_age": 0,
    }
    worker.state = "dead"
    assert shapes.worker_liveness(worker, config, now) == "dead"


def test_narrow_tables_drop_optional_columns_but_never_the_id() -> None:
    columns = [Column("id"), Column("queue", drop=2), Column("pri", drop=1), Column("command", shrink=True)]
    rows = [["job-with-a-long-id", "nightly-builds", "10", "sleep 1; " * 20]]
    assert fit_columns(columns, rows, 200) == [0, 1, 2, 3]
    assert fit_columns(columns, rows, 46) == [0, 1, 3]  # pri goes first
    assert fit_columns(columns, rows, 30) == [0, 3]  # then queue; the id and the command stay


def test_what_a_burst_worker_says_it_left() -> None:
    now = 1000.0
    assert Leftover(None).describe(now) == "nothing left"
    assert Leftover(now + 600, retries=1).describe(now) == "left 1 job whose retry is due in 10m00s"
    text = Leftover(now + 90, retries=2, delayed=1, waiting=3, paused=4).describe(now)
    assert text == (
        "left 2 jobs whose retries are due later, 1 job delayed, 3 jobs waiting for their parents, "
        "4 jobs in paused queues (the next is due in 1m30s)"
    )
    assert Leftover(now + 5).due_within(now) and not Leftover(now + 60).due_within(now)


def test_one_line_per_finished_job() -> None:
    done = Outcome("completed", 10.0, exit_code=0, duration=0.004)
    assert finished_line("k3", done, 10.0) == "job k3 completed (exit code 0, ran 4ms)"
    failed = Outcome("failed", 10.0, run_at=12.0, exit_code=1, duration=1.0)
    assert finished_line("k3", failed, 10.0) == "job k3 failed (exit code 1, ran 1.0s, retry in 2.0s)"


def test_a_log_line_to_a_gone_reader_silences_the_log_instead_of_raising() -> None:
    code = (
        "import os, sys\n"
        "from queuectl.runtime.loglines import write_line\n"
        "write_line('first')\n"  # the reader is gone: EPIPE
        "write_line('second')\n"
        "print('still here', file=sys.stderr)\n"  # fd 2 is /dev/null now: no error either
        "os._exit(0)\n"
    )
    reader, writer = os.pipe()
    os.close(reader)
    proc = subprocess.run([sys.executable, "-c", code], stderr=writer, timeout=30)
    os.close(writer)
    assert proc.returncode == 0
