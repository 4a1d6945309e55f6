"""Issue 11 #11: no human-facing renderer passes a job's or a user's control characters to the terminal.

A command, an output, an error or a name that holds ESC (CSI ``ESC[2J``, OSC ``ESC]0;title BEL``),
a one-byte CSI (U+009B), ``\\r`` or a bidi override must show as U+FFFD, never reach the terminal.
The renderers print without a terminal here, so Rich adds no escape sequence of its own: any ESC
in the output came from the data.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from queuectl.cli import render
from queuectl.cli.dashboard_view import render as render_dashboard
from queuectl.cli.dashboard_view import status_view
from queuectl.core.config import RuntimeConfig
from queuectl.core.models import Job, WorkerInfo
from queuectl.service.dashboard import Failure, RunningJob, Snapshot, WorkerRow

HOSTILE = "a\x1b[2J\x1b]0;pwned\x07\x9b31m\rfake\u202eb\x08\x7f"
BAD = ("\x1b", "\x07", "\x9b", "\r", "\u202e", "\x08", "\x7f")


def assert_clean(text: str) -> None:
    found = [repr(char) for char in BAD if char in text]
    assert not found, f"control characters {found} reach the terminal in:\n{text!r}"


def test_printable_replaces_controls_and_keeps_newlines_and_tabs() -> None:
    assert render.printable("x\x1b[31my\r\nz\tw\x9b") == "x\ufffd[31my\ufffd\nz\tw\ufffd"
    assert render.printable(None) == ""


def hostile_job() -> Job:
    return Job(
        id="j1",
        command=f"echo {HOSTILE}\nsecond {HOSTILE}",
        queue=f"q{HOSTILE}",
        state="dead",
        created_at=1000.0,
        updated_at=1000.0,
        run_at=1000.0,
        last_error=f"exit code 1 {HOSTILE}",
        output=f"out {HOSTILE}\nline two",
        on_finish=f"notify {HOSTILE}",
        hook_state="failed",
        hook_error=f"hook {HOSTILE}",
        cwd=f"/tmp/{HOSTILE}",
        env={"K": HOSTILE},
        unique_key=HOSTILE,
        schedule=HOSTILE,
    )


@pytest.mark.parametrize("fmt", ["table", "tsv"])
def test_list_show_workers_and_plain_tables_strip_controls(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    job = hostile_job()
    render.jobs_table([job], "jobs", fmt, now=2000.0)
    render.job_detail(job)
    render.workers_table(
        [
            WorkerInfo(
                id=f"w{HOSTILE}",
                host=f"h{HOSTILE}",
                pid=1,
                state=HOSTILE,
                started_at=1.0,
                last_heartbeat=time.time(),
                queues=HOSTILE,
                current_jobs=[HOSTILE],
            )
        ],
        RuntimeConfig(),
        fmt,
    )
    render.plain_table(fmt, "schedules", ("name", "command"), [(HOSTILE, f"run {HOSTILE}")])
    out = capsys.readouterr().out
    assert "pwned" in out and "line two" in out  # the text itself is shown...
    assert_clean(out)  # ...its control characters are not (observed: raw ESC from command text)


def snapshot() -> Snapshot:
    job = RunningJob(id=f"r{HOSTILE}", command=f"sleep {HOSTILE}", running_for=3.0)
    worker = WorkerRow(
        id=f"w{HOSTILE}",
        host=f"h{HOSTILE}",
        pid=7,
        state="running",
        queues=HOSTILE,
        concurrency=1,
        heartbeat_age=1.0,
        unresponsive=False,
        jobs=[job],
    )
    failure = Failure(
        id=f"f{HOSTILE}",
        state="dead",
        queue=f"q{HOSTILE}",
        attempts=3,
        max_attempts=3,
        age=5.0,
        error=f"exit code 1 {HOSTILE}",
        command=f"cmd {HOSTILE}",
        last_output=f"boom {HOSTILE}",
    )
    return Snapshot(
        at=time.time(),
        states={"dead": 1, HOSTILE: 1},
        queues={f"q{HOSTILE}": {"dead": 1}},
        paused=[f"p{HOSTILE}"],
        completed_per_bucket=[0] * 15,
        failed_per_bucket=[0] * 15,
        lag=None,
        next_due_in=None,
        workers=[worker],
        workers_stopped=0,
        failures=[failure],
        lease=30.0,
    )


@pytest.mark.parametrize("width", [80, 200])
def test_dashboard_strips_controls(width: int) -> None:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(
        render_dashboard(
            snapshot(), None, width=width, error=f"down {HOSTILE}", source=f"sqlite:///{HOSTILE}", interval=1.0
        )
    )
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "pwned" in out
    assert_clean(out)  # observed: a failing job's output printed with its OSC and ESC[2J


def test_status_watch_strips_controls_from_paused_queue_names() -> None:
    class FakeStore:
        def __getattr__(self, name: str) -> object:
            raise AttributeError(name)

    from queuectl.service import observe as service

    class Summary:
        states = {"pending": 1}
        workers_alive = 0
        paused = {f"p{HOSTILE}"}

    original = service.status
    service.status = lambda store, now: Summary()  # type: ignore[assignment,misc,return-value]  # a stand-in
    try:
        console = Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)
        console.print(status_view(FakeStore()))  # type: ignore[arg-type]
    finally:
        service.status = original  # type: ignore[assignment]
    assert_clean(console.file.getvalue())  # type: ignore[attr-defined]


def test_cli_list_show_and_schedule_list_strip_controls(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env.update(QUEUECTL_DB=f"sqlite:///{tmp_path / 'q.db'}", XDG_DATA_HOME=str(tmp_path / "data"), COLUMNS="200")

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "queuectl", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    job_id = cli("enqueue", f"echo {HOSTILE}", "--id", "evil").strip()
    cli("schedule", "add", "tick", "0 3 * * *", f"echo {HOSTILE}")
    for out in (cli("list"), cli("show", job_id), cli("schedule", "list")):
        assert "pwned" in out, out
        assert_clean(out)
