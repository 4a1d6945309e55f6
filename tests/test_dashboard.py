"""The dashboard: its data (collect, history, sparkline), its rendering at 80x24 and 160 columns,
the store-unavailable banner and recovery, the live loop under a real pseudo-terminal, the no-TTY
snapshot through the real CLI, and the ``status --watch`` helper.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from rich.console import Console

from queuectl.cli.dashboard_live import DashboardState
from queuectl.cli.dashboard_view import render, status_view
from queuectl.cli.live import watch
from queuectl.core import lifecycle
from queuectl.core.errors import EXIT_UNAVAILABLE, StoreUnavailable
from queuectl.core.models import Job, WorkerInfo
from queuectl.service import queues as queue_service
from queuectl.service import workers as worker_service
from queuectl.service.dashboard import SPARK_BLOCKS, History, collect, sparkline
from queuectl.store.sql.sqlite import SqliteStore

CLI = [sys.executable, "-m", "queuectl"]
NOW = 1_800_000_000.0  # fixed clock for the data tests (a minute boundary: 30_000_000 * 60)
RED = re.compile(r"\x1b\[(?:[0-9]+;)*31m")


def job(job_id: str, state: str = "pending", age: float = 100.0, now: float = NOW, **fields: Any) -> Job:
    created = fields.pop("created_at", now - age)
    fields.setdefault("updated_at", created)
    fields.setdefault("run_at", created)
    return Job(id=job_id, command=fields.pop("command", f"echo {job_id}"), state=state, created_at=created, **fields)


def fill(store: SqliteStore, now: float = NOW) -> None:
    """3 completed, 2 pending, 1 running, 1 failed (retry later), 1 dead; three workers."""
    jobs = [
        job(
            f"done{i}",
            "completed",
            finished_at=now - 30 - 60 * i,
            updated_at=now - 30 - 60 * i,
            started_at=now - 31 - 60 * i,
            duration=1.0 + i,
            exit_code=0,
            now=now,
        )
        for i in range(3)
    ]
    jobs += [job("wait1", age=40, now=now), job("wait2", age=20, now=now)]
    jobs += [
        job(
            "run1",
            "processing",
            command="sleep 100 && echo slow",
            locked_by="w-alive",
            started_at=now - 12,
            attempts=1,
            now=now,
        ),
        job(
            "flaky",
            "failed",
            attempts=1,
            run_at=now + 50,
            updated_at=now - 10,
            command="curl https://example.com/api",
            last_error="exit code 7\nthe second line must not show",
            exit_code=7,
            output="curl: (7) Failed to connect\n",
            now=now,
        ),
        job(
            "gone",
            "dead",
            attempts=4,
            max_retries=3,
            updated_at=now - 70,
            finished_at=now - 70,
            last_error="timeout: still running after 30s, process group killed",
            now=now,
        ),
    ]
    lifecycle.enqueue(store, jobs)
    worker_service.register_worker(
        store,
        WorkerInfo(
            id="w-alive",
            host="web-1",
            pid=4242,
            state="running",
            started_at=now - 500,
            last_heartbeat=now - 2,
            current_jobs=["run1"],
        ),
    )
    worker_service.register_worker(
        store,
        WorkerInfo(
            id="w-stale",
            host="web-2",
            pid=777,
            state="running",
            started_at=now - 400,
            last_heartbeat=now - 300,
            current_jobs=["done0"],
        ),
    )  # finished after it went silent
    worker_service.register_worker(
        store,
        WorkerInfo(id="w-gone", host="web-3", pid=99, state="stopped", started_at=now - 900, last_heartbeat=now - 800),
    )
    queue_service.set_paused(store, "builds", True)


@pytest.fixture
def queue_db(tmp_path: Path) -> Iterator[SqliteStore]:
    """A prepared SQLite queue in tmp_path/q.db (the lease is the default 30 s), as of NOW."""
    store = SqliteStore(str(tmp_path / "q.db"))
    fill(store)
    yield store
    store.close()


@pytest.fixture
def live_db(tmp_path: Path) -> Iterator[SqliteStore]:
    """The same queue as of the real time, for the commands (which read the real clock)."""
    store = SqliteStore(str(tmp_path / "q.db"))
    fill(store, time.time())
    yield store
    store.close()


def recorded(renderable: Any, width: int, height: int | None = None) -> tuple[str, str]:
    """(plain text, text with ANSI styles) of a renderable printed at that size."""
    console = Console(
        record=True,
        width=width,
        height=height or 200,
        force_terminal=True,
        color_system="standard",
        file=open(os.devnull, "w"),
    )
    console.print(renderable)
    return console.export_text(clear=False), console.export_text(styles=True)


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"{needle!r} not in:\n{text}"
    return lines[0]


def counts_row(text: str) -> dict[str, int]:
    """The jobs table as {state: count}, read from its header line and its 'now' line."""
    header = line_with(text, "processing").split()
    values = line_with(text, "now ").split()
    assert header[0] == "jobs" and values[0] == "now"
    return dict(zip(header[1:], (int(v.replace(",", "")) for v in values[1:]), strict=True))


# --- data ---------------------------------------------------------------------------------------


def test_collect_reads_counts_lag_workers_and_failures(queue_db: SqliteStore) -> None:
    snap = collect(queue_db, NOW)
    assert snap.states["completed"] == 3 and snap.states["pending"] == 2
    assert snap.states["processing"] == 1 and snap.states["failed"] == 1 and snap.dlq == 1
    assert snap.lag == pytest.approx(40.0)  # wait1, due 40 s ago, is the oldest eligible job
    assert snap.paused == ["builds"]
    by_id = {w.id: w for w in snap.workers}
    assert set(by_id) == {"w-alive", "w-stale"} and snap.workers_stopped == 1
    assert not by_id["w-alive"].unresponsive and by_id["w-stale"].unresponsive
    assert by_id["w-alive"].jobs[0].running_for == pytest.approx(12.0)
    assert by_id["w-stale"].jobs[0].running_for is None
    assert by_id["w-stale"].jobs[0].elsewhere == "completed"
    assert [f.id for f in snap.failures] == ["flaky", "gone"]
    assert snap.failures[0].error == "exit code 7"
    assert snap.failures[0].last_output == "curl: (7) Failed to connect"
    assert snap.failures[0].retry_in == pytest.approx(50.0)
    assert len(snap.completed_per_bucket) == 15
    # done0 finished 30 s ago (last bucket but one: NOW is a minute boundary), done1 90 s ago...
    assert snap.completed_per_bucket[-3:] == [1, 1, 0] and sum(snap.completed_per_bucket) == 3
    assert sum(snap.failed_per_bucket) == 2


def test_collect_on_every_backend(store: Any) -> None:
    """The same snapshot from the shared ``store`` fixture (SQLite, mongomock, a real MongoDB)."""
    fill(store)
    snap = collect(store, NOW)
    assert (snap.states["pending"], snap.states["completed"], snap.dlq) == (2, 3, 1)
    assert [w.unresponsive for w in sorted(snap.workers, key=lambda w: w.id)] == [False, True]
    assert snap.failures[0].error == "exit code 7"


def test_nothing_due_means_no_lag_but_the_next_due_time() -> None:
    store = _MemoryStore()
    store.next_due_at = NOW + 90
    snap = collect(store, NOW)  # type: ignore[arg-type]
    assert snap.lag is None and snap.next_due_in == pytest.approx(90)


def test_a_paused_backlog_is_not_lag(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    lifecycle.enqueue(store, [job("held", queue="builds", age=300), job("soon", age=-30)])
    assert collect(store, NOW).lag == pytest.approx(300)
    queue_service.set_paused(store, "builds", True)
    snap = collect(store, NOW)
    assert snap.lag is None and snap.next_due_in == pytest.approx(30)  # only "soon" can run
    lifecycle.enqueue(store, [job("ready", age=5)])
    assert collect(store, NOW).lag == pytest.approx(5)
    store.close()


def test_history_compares_with_the_snapshot_a_minute_ago(queue_db: SqliteStore) -> None:
    history = History()
    first = collect(queue_db, NOW)
    history.add(first)
    assert history.change(first) is None  # nothing to compare with yet
    lifecycle.enqueue(
        queue_db, [job("new1", "completed", finished_at=NOW + 20), job("new2", "completed", finished_at=NOW + 40)]
    )
    for at in (NOW + 20, NOW + 40, NOW + 61):
        latest = collect(queue_db, at)
        history.add(latest)
    deltas, span = history.change(latest)  # type: ignore[misc]
    assert span == pytest.approx(61.0)  # against the latest snapshot at least a minute old: NOW
    assert deltas["completed"] == 2 and deltas["pending"] == 0
    lifecycle.enqueue(queue_db, [job("new3", "completed", finished_at=NOW + 80)])
    latest = collect(queue_db, NOW + 100)
    history.add(latest)
    deltas, span = history.change(latest)  # type: ignore[misc]
    assert span == pytest.approx(60.0) and deltas["completed"] == 1  # since NOW + 40
    assert len(history) == 3  # NOW and NOW + 20 were dropped


def test_sparkline_levels() -> None:
    assert sparkline([0, 0, 0]) == SPARK_BLOCKS[0] * 3
    line = sparkline([0, 1, 50, 100])
    assert line[0] == "▁" and line[1] != "▁" and line[-1] == "█"
    assert sparkline([1, 2], scale=100) == "▂▂"  # small but visible against a shared scale


# --- rendering ----------------------------------------------------------------------------------


def test_render_80x24_fits_and_shows_counts_stale_worker_and_failure(queue_db: SqliteStore) -> None:
    history = History()
    history.add(collect(queue_db, NOW - 60))
    snap = collect(queue_db, NOW)
    history.add(snap)
    text, styled = recorded(render(snap, history, width=80, height=24, interval=1.0, now=NOW), 80, 24)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= 24, text
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert counts_row(text) == {
        "pending": 2,
        "waiting": 0,
        "held": 0,
        "processing": 1,
        "completed": 3,
        "failed": 1,
        "dead": 1,
        "cancelled": 0,
    }
    assert "Δ 1m" in text
    assert "DLQ 1" in text and "paused: builds" in text and "lag 40.0s" in text
    assert "1 alive" in text and "1 unresponsive" in text
    stale = line_with(styled, "web-2:777")
    assert "unresponsive" in stale and RED.search(stale), repr(stale)
    assert "done0 (completed)" in stale
    alive = line_with(styled, "web-1:4242")
    assert "running" in alive and "run1 12.0s" in alive and not RED.search(alive)
    assert "web-3" not in text  # stopped workers are only counted
    assert "exit code 7" in line_with(text, "flaky")
    assert "second line" not in text
    assert "timeout: still running" in line_with(text, "gone")
    assert "▁" in line_with(text, "completed/min")


def test_render_160_uses_the_width(queue_db: SqliteStore) -> None:
    snap = collect(queue_db, NOW)
    text, _ = recorded(render(snap, None, width=160, height=48, interval=1.0, now=NOW), 160)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 160
    # queues beside the totals, worker ids and commands, failures with their command and retry time
    top = line_with(text, "processing")
    assert top.split()[0] == "jobs" and "queue" in top
    assert "builds ⏸" in text
    assert "w-alive" in line_with(text, "web-1:4242") and "sleep 100 && echo slow" in text
    flaky = line_with(text, "flaky")
    assert "curl https://example.com/api" in flaky and "retry in 50.0s" in flaky
    assert "curl: (7) Failed to connect" in flaky
    assert "-15m" in text and "now" in text


def test_render_once_has_no_change_row_and_escapes_user_text(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    lifecycle.enqueue(
        store,
        [job("m1", "dead", command="echo [bold]x[/bold]", last_error="[red]not markup[/red]", updated_at=NOW - 5)],
    )
    text, _ = recorded(render(collect(store, NOW), None, width=100, now=NOW), 100)
    assert "Δ" not in text and "q quits" not in text
    assert "[red]not markup[/red]" in text
    store.close()


def test_many_workers_are_cut_to_the_height(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    for n in range(30):
        worker_service.register_worker(
            store, WorkerInfo(id=f"w{n}", host="h", pid=n, state="running", started_at=NOW - n, last_heartbeat=NOW)
        )
    text, _ = recorded(render(collect(store, NOW), None, width=80, height=24, interval=1.0, now=NOW), 80)
    assert len(text.rstrip("\n").splitlines()) <= 24
    assert re.search(r"… \d+ more", text)
    store.close()


# --- the store being unavailable ----------------------------------------------------------------


class _FlakyStore:
    """A real store whose counts() raises StoreUnavailable while ``down`` is set."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.down = False

    def counts(self) -> Any:
        if self.down:
            raise StoreUnavailable("cannot reach the database (test)")
        return self.inner.counts()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_unavailable_store_shows_a_banner_then_recovers(queue_db: SqliteStore) -> None:
    flaky = _FlakyStore(queue_db)
    clock = [NOW]
    state = DashboardState(flaky, "sqlite:///q.db", clock=lambda: clock[0])  # type: ignore[arg-type]
    assert state.refresh()
    good, _ = recorded(state.view(80, 24, 1.0), 80)
    assert "unavailable" not in good and counts_row(good)["pending"] == 2

    flaky.down = True
    clock[0] += 5
    assert not state.refresh()  # no exception escapes
    down, styled = recorded(state.view(80, 24, 1.0), 80)
    banner = line_with(styled, "database unavailable")
    assert "cannot reach the database (test)" in banner and "\x1b[" in banner
    assert "5.0s ago" in down  # the data shown is the last good read, and says how old it is
    assert counts_row(down)["pending"] == 2

    flaky.down = False
    clock[0] += 1
    assert state.refresh()
    again, _ = recorded(state.view(80, 24, 1.0), 80)
    assert "unavailable" not in again and counts_row(again)["completed"] == 3


def test_unavailable_from_the_start_shows_the_banner_alone(queue_db: SqliteStore) -> None:
    flaky = _FlakyStore(queue_db)
    flaky.down = True
    state = DashboardState(flaky)  # type: ignore[arg-type]
    assert not state.refresh()
    text, _ = recorded(state.view(80, 24, 1.0), 80)
    assert "database unavailable" in text and "no data yet" in text


# --- the command --------------------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env.update(
        {
            "QUEUECTL_DB": f"sqlite:///{tmp_path / 'q.db'}",
            "XDG_DATA_HOME": str(tmp_path),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.pop("COLUMNS", None)
    return env


@pytest.mark.parametrize("args", [["dashboard", "--once"], ["dashboard"]])
def test_dashboard_without_a_tty_prints_one_snapshot(live_db: SqliteStore, tmp_path: Path, args: list[str]) -> None:
    result = subprocess.run(
        [*CLI, *args], env=cli_env(tmp_path), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    counts = counts_row(result.stdout)
    assert counts["pending"] == 2 and counts["completed"] == 3 and counts["dead"] == 1
    assert "unresponsive" in result.stdout and "\x1b[" not in result.stdout  # no colour codes in a pipe


def test_dashboard_once_on_an_unusable_database_exits_5(tmp_path: Path) -> None:
    (tmp_path / "q.db").write_text("this is not a database\n" * 100)
    os.chmod(tmp_path / "q.db", 0o600)
    result = subprocess.run(
        [*CLI, "dashboard", "--once"], env=cli_env(tmp_path), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == EXIT_UNAVAILABLE
    assert result.stderr.startswith("queuectl: error: ") and result.stderr.count("\n") == 1


def test_live_dashboard_on_a_terminal_quits_on_q_and_restores_it(live_db: SqliteStore, tmp_path: Path) -> None:
    import pty
    import termios

    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    before = termios.tcgetattr(slave)
    env = cli_env(tmp_path)
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [*CLI, "dashboard", "--interval", "0.3"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    screen = b""
    try:
        deadline = time.monotonic() + 20
        while b"web-2:777" not in screen and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                screen += os.read(master, 65536)
            except BlockingIOError:
                pass
        assert b"web-2:777" in screen, screen[-2000:]
        assert b"\x1b[?1049h" in screen  # the alternate screen: the shell's screen comes back
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON and not during[3] & termios.ECHO  # cbreak, no echo
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def test_cli_start_up_does_not_import_rich_or_prometheus() -> None:
    code = (
        "import sys, queuectl.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'prometheus_client'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr


# --- status --watch (the helper the status command calls) --------------------------------------


def test_watch_without_a_terminal_prints_each_refresh_and_survives_an_outage(
    live_db: SqliteStore,
) -> None:
    flaky = _FlakyStore(live_db)
    calls = []

    def produce() -> Any:
        calls.append(1)
        flaky.down = len(calls) == 2  # the second read fails
        return status_view(flaky)  # type: ignore[arg-type]

    console = Console(record=True, width=80, file=open(os.devnull, "w"))
    watch(produce, interval=0.01, console=console, iterations=3)
    text = console.export_text()
    assert text.count("workers alive: 1") == 3  # the last good view stays on screen
    assert text.count("database unavailable") == 1
    assert "pending" in text and "waiting" in text


# --- a store stub for the edge cases ----------------------------------------------------------


class _MemoryStore:
    """Just enough of the store contract for collect() on an empty queue."""

    next_due_at: float | None = None

    def counts(self) -> dict[str, dict[str, int]]:
        return {}

    def throughput(self, since: float, bucket: float = 60.0) -> dict[str, dict[int, int]]:
        return {"completed": {}, "failed": {}}

    def next_due(self, queues: Any) -> float | None:
        return self.next_due_at

    def registry_list(self, kind: str, key: str | None = None) -> list[dict[str, Any]]:
        return []  # no config set, no workers, no paused queues

    def recent_failures(self, limit: int = 5) -> list[Job]:
        return []


def test_a_running_jobs_progress_shows_as_list_shows_it(queue_db: SqliteStore) -> None:
    from queuectl.service.history import progress_text

    progress = {"progress_done": 40, "progress_total": 100, "progress_message": "resizing", "progress_at": NOW - 2}
    assert queue_db.update_job("run1", progress, states=("processing",))
    shown = progress_text(queue_db.get("run1"))  # type: ignore[arg-type]
    assert shown == "40% resizing (ETA 15.0s)"  # 40 done in the 10 s since it started
    snap = collect(queue_db, NOW)
    assert sorted((job.id, job.progress or "") for worker in snap.workers for job in worker.jobs) == [
        ("done0", ""),
        ("run1", shown),
    ]
    for width, height in ((80, 24), (160, 48)):
        text, _ = recorded(render(snap, None, width=width, height=height, interval=1.0, now=NOW), width, height)
        assert f"run1 12.0s {shown}" in line_with(text, "web-1:4242"), text


# --- labels (issue 15) ---------------------------------------------------------------------------


def test_labels_are_shown_compact_and_cut_whole_pairs_first() -> None:
    from queuectl.cli.dashboard_view import labels_text

    assert labels_text({"team": "infra", "env": "prod"}, 32) == "team=infra,env=prod"
    assert labels_text({"team": "infra", "env": "prod", "x": "y"}, 16) == "team=infra,+2"
    assert labels_text({"averyveryverylongkey": "value"}, 16) == "averyveryverylo…"
    assert len(labels_text({"averyveryverylongkey": "value", "b": "c"}, 16)) <= 16
    assert "\x1b" not in labels_text({"k": "\x1b[31mred"}, 32)  # made printable like every user text


@pytest.mark.parametrize("width", [80, 160])
def test_the_dashboard_shows_the_labels_of_running_and_failed_jobs(tmp_path: Path, width: int) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    jobs = [
        job("run1", "processing", locked_by="w1", started_at=NOW - 5, attempts=1, labels={"team": "infra"}),
        job(
            "bad1",
            "dead",
            attempts=1,
            max_retries=0,
            updated_at=NOW - 5,
            last_error="exit code 2",
            labels={"env": "prod"},
        ),
    ]
    lifecycle.enqueue(store, jobs)
    worker = WorkerInfo("w1", "web-1", 42, "running", NOW - 60, NOW - 1, current_jobs=["run1"])
    worker_service.register_worker(store, worker)
    snap = collect(store, NOW)
    assert snap.workers[0].jobs[0].labels == {"team": "infra"} and snap.failures[0].labels == {"env": "prod"}
    text, _ = recorded(render(snap, None, width=width, height=40, interval=1.0, now=NOW), width)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    assert "run1 5.0s [team=infra]" in line_with(text, "web-1:42")
    assert "env=prod" in line_with(text, "bad1")
    store.close()
