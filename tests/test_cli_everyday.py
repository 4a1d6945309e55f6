"""Everyday use (issue 14): output that pipes and fits, JSON like gh, and commands without traps.

Each test runs the real CLI as a subprocess (helpers from ``test_cli``). A terminal, where one is
needed (a table that fits, a prompt, a progress bar), is a pseudo-terminal of the test's own.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
from test_cli import CLI, Cli, clean_env, describe, epoch, fails, ok, ok_json

from queuectl.core.errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from queuectl.core.models import WorkerInfo

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def in_terminal(
    run: Cli, *args: str, answer: str = "", columns: int = 200, stdout_pipe: bool = False, timeout: float = 60
) -> tuple[int, str, str]:
    """Run the CLI with stdin and stderr (and stdout unless ``stdout_pipe``) on a pseudo-terminal
    of ``columns``; type ``answer``. Returns (exit code, what the terminal showed, stdout if piped)."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**run.env, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        [*CLI, *args],
        env=env,
        cwd=run.tmp_path,
        stdin=slave,
        stdout=subprocess.PIPE if stdout_pipe else slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    shown = piped = b""
    typed = False
    # a piped stdout is read as it comes: left unread, a command printing more than the pipe
    # holds (64 KiB) would block until the deadline, and the test would only be slow
    out = proc.stdout.fileno() if proc.stdout else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master] + ([out] if out is not None else []), [], [], 0.1)
        if out is not None and out in ready:
            chunk = os.read(out, 65536)
            piped += chunk
            if not chunk:
                out = None
        if master in ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer is gone
                chunk = b""
            shown += chunk
            if not chunk and proc.poll() is not None and out is None:
                break
        if answer and not typed and b"?" in shown:
            os.write(master, answer.encode())
            typed = True
        if proc.poll() is not None and not ready:
            break
    assert time.monotonic() < deadline, f"{args} did not end within {timeout:g}s"
    stdout = (piped + (proc.stdout.read() if proc.stdout else b"")).decode()
    code = proc.wait(timeout=10)
    os.close(master)
    return code, shown.decode(errors="replace"), stdout


def tsv(proc: subprocess.CompletedProcess) -> list[list[str]]:
    return [line.split("\t") for line in ok(proc).splitlines()]


# --- output that pipes and fits -----------------------------------------------------------------


def test_tables_in_a_pipe_are_tsv_with_a_header_and_nothing_cut(run: Cli) -> None:
    long_command = "echo " + "x" * 300 + "\tand a tab"
    run.enqueue_lines(json.dumps({"id": "long", "command": long_command, "queue": "builds"}), "echo short")
    listed, as_table, as_json, formatted_json, bad, both = run.many(
        ("list",),
        ("list", "--format", "table"),
        ("list", "--json"),
        ("list", "--format", "json"),
        ("list", "--format", "csv"),
        ("list", "--json", "--format", "tsv"),
    )
    rows = tsv(listed)
    assert rows[0] == ["id", "state", "queue", "pri", "tries", "command", "when", "last error", "waits for"]
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["long"][:6] == ["long", "pending", "builds", "0", "0/4", long_command.replace("\t", "\\t")]
    assert RFC3339.match(by_id["long"][6])  # an absolute time, not "3s ago"
    assert all(len(row) == len(rows[0]) for row in rows)
    # `cut -f1` gives the ids, as in a shell pipe
    cut = subprocess.run(
        f"{' '.join(CLI)} list | cut -f1", shell=True, env=run.env, cwd=run.tmp_path, capture_output=True, text=True
    )
    assert cut.stdout.split()[0] == "id" and "long" in cut.stdout.split()
    assert "─" in ok(as_table)  # --format table draws a table even in a pipe
    assert ok_json(as_json) == ok_json(formatted_json)
    fails(bad, EXIT_USAGE, "unknown format 'csv'", "table, tsv, json")
    fails(both, EXIT_USAGE, "--json", "--format tsv")


def test_every_table_pipes_as_tsv(run: Cli) -> None:
    run.enqueue_lines('{"command": "true", "queue": "builds"}')
    ok(run("schedule", "add", "nightly", "0 3 * * *", "echo backup"))
    dlq, queues, config, schedules, status = run.many(
        ("dlq", "list"), ("queue", "list"), ("config", "list"), ("schedule", "list"), ("status",)
    )
    assert tsv(dlq) == [["id", "state", "queue", "pri", "tries", "command", "when", "last error"]]
    assert tsv(queues)[1][:5] == ["builds", "no", "-", "-", "1"]  # no limit, no rate, 1 pending
    assert ["lease", "30", "yes"] in [row[:3] for row in tsv(config)]
    assert tsv(schedules)[1][:4] == ["nightly", "0 3 * * *", "UTC", "echo backup"]
    assert ["total", "1"] in tsv(status)


def register_workers(run: Cli, *workers: WorkerInfo) -> None:
    from queuectl.service import workers as registry

    ok(run("status"))  # the database exists
    store = run._store()
    try:
        for worker in workers:
            registry.register_worker(store, worker)
    finally:
        store.close()


def test_a_60_column_terminal_gets_whole_ids_and_unclipped_tables(run: Cli) -> None:
    run.enqueue_lines(
        json.dumps({"id": "job-with-a-long-id", "command": "sleep 1; " * 20, "queue": "nightly-builds"}),
        json.dumps({"id": "k3v9q2mx7d", "command": "echo hi"}),
    )
    now = time.time()
    register_workers(
        run,
        WorkerInfo("w12345-abcd", "a-rather-long-host-name", 12345, "running", now, now, "*", 4, ["k3v9q2mx7d"]),
    )
    for args in (("list",), ("worker", "list"), ("queue", "list"), ("config", "list"), ("status",)):
        code, shown, _ = in_terminal(run, *args, columns=60)
        assert code == EXIT_OK, shown
        lines = ANSI.sub("", shown).replace("\r", "").splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 60, (args, shown)
        if args == ("list",):
            assert "job-with-a-long-id" in shown and "k3v9q2mx7d" in shown  # ids never cut
            assert "…" in shown  # the command gave way
        if args == ("worker", "list"):
            assert "w12345-abcd" in shown and "running" in shown


# --- JSON like gh ---------------------------------------------------------------------------------


def test_json_times_are_rfc3339_utc_and_lists_leave_out_the_output(run: Cli) -> None:
    run.enqueue_dead("x1")
    ok(run("schedule", "add", "nightly", "0 3 * * *", "echo backup"))
    register_workers(run, WorkerInfo("w1", "host", 1, "running", time.time(), time.time()))
    shown, listed, dead, workers, schedules = run.many(
        ("show", "x1", "--json"),
        ("list", "--json"),
        ("dlq", "list", "--json"),
        ("worker", "list", "--json"),
        ("schedule", "list", "--json"),
    )
    job = ok_json(shown)
    assert job["output"] == "boom\n"  # show keeps the output tail
    for name in ("created_at", "updated_at", "started_at", "finished_at", "run_at"):
        assert RFC3339.match(job[name]), (name, job[name])
    assert job["lease_expires_at"] is None
    assert abs((epoch(job["finished_at"]) or 0) - time.time()) < 60
    for view in (ok_json(listed), ok_json(dead)):
        assert [item["id"] for item in view] == ["x1"]
        assert "output" not in view[0]  # up to 64 KiB per job: only for show and logs
        assert {key: value for key, value in job.items() if key not in ("output", "history")} == view[0]  # one shape
    worker = ok_json(workers)[0]
    assert RFC3339.match(worker["started_at"]) and RFC3339.match(worker["last_heartbeat"])
    schedule = ok_json(schedules)[0]
    assert RFC3339.match(schedule["next_fire_at"]) and schedule["last_fire_at"] is None


def test_worker_list_json_gives_the_liveness_the_table_shows(run: Cli) -> None:
    now = time.time()
    register_workers(
        run,
        WorkerInfo("w-alive", "h", 1, "running", now - 10, now - 1),
        WorkerInfo("w-silent", "h", 2, "running", now - 200, now - 100),  # the lease is 30 s
        WorkerInfo("w-dead", "h", 3, "dead", now - 200, now - 2),  # its supervisor saw it die
        WorkerInfo("w-stopped", "h", 4, "stopped", now - 200, now - 50),
    )
    listed, table, every = run.many(
        ("worker", "list", "--json"), ("worker", "list"), ("worker", "list", "--all", "--json")
    )
    states = {w["id"]: (w["state"], w["alive"]) for w in ok_json(listed)}
    assert states == {
        "w-alive": ("running", True),
        "w-silent": ("unresponsive", False),
        "w-dead": ("dead", False),
    }
    assert {row[0]: row[3] for row in tsv(table)[1:]} == {key: state for key, (state, _) in states.items()}
    assert {w["id"]: w["state"] for w in ok_json(every)}["w-stopped"] == "stopped"
    status = ok_json(run("status", "--json"))
    assert status["workers"] == {"alive": 1, "registered": 4, "autoscaling": []}  # no --count MIN..MAX here


# --- destructive or mistyped commands -------------------------------------------------------------


def test_bare_purge_needs_older_than_or_yes(run: Cli) -> None:
    run.enqueue_dead("d1")
    from queuectl.core.models import COMPLETED, Lease, Outcome

    ok(run("enqueue", "true", "--id", "c1"))
    store = run._store()
    try:
        claimed = store.claim("t", None, time.time(), 30.0)
        from queuectl.core import lifecycle

        assert lifecycle.finish(store, Lease("c1", "t", claimed[0].attempts), Outcome(COMPLETED, time.time()))
    finally:
        store.close()
    bare, piped_yes, recent, dry = run.many(
        ("purge",),
        (("purge",), "y\n"),  # an answer on a pipe is no confirmation
        ("purge", "--older-than", "1d"),
        ("purge", "--dry-run"),
    )
    fails(bare, EXIT_USAGE, "every completed job", "--older-than", "--yes")
    fails(piped_yes, EXIT_USAGE, "--yes")
    assert ok(recent) == "deleted 0 job(s)\n" and ok(dry) == "would delete 1 job(s)\n"
    assert run.stored_ids() == ["c1", "d1"]
    # on a terminal it asks, on stderr: stdout holds only the result
    code, shown, stdout = in_terminal(run, "purge", "--state", "dead", answer="n\n", stdout_pipe=True)
    assert code == 1 and "Delete every dead job" in shown and stdout == ""
    assert run.stored_ids() == ["c1", "d1"]
    code, shown, stdout = in_terminal(run, "purge", answer="y\n", stdout_pipe=True)
    assert code == EXIT_OK and "Delete every completed job" in shown and stdout == "deleted 1 job(s)\n"
    assert ok(run("purge", "--state", "dead", "--yes")) == "deleted 1 job(s)\n"
    assert run.stored_ids() == []


def test_dlq_purge_asks_on_the_terminal_not_on_stdout(run: Cli) -> None:
    run.enqueue_dead("d1")
    code, shown, stdout = in_terminal(run, "dlq", "purge", answer="n\n", stdout_pipe=True)
    assert code == 1 and "Delete every job in the dead letter queue?" in shown and stdout == ""
    code, shown, stdout = in_terminal(run, "dlq", "purge", answer="y\n", stdout_pipe=True)
    assert code == EXIT_OK and stdout == "deleted 1 job(s)\n"
    assert run.stored_ids() == []


def test_an_explicit_db_path_needs_its_folder(run: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "qeue" / "q.db"
    flag, from_env = run.many(("--db", f"sqlite:///{typo}", "status"), ("status",))
    fails(flag, EXIT_USAGE, f"no folder {typo.parent}", "mkdir -p")
    ok(from_env)
    env = clean_env(tmp_path, db=f"sqlite:///{typo}")
    fails(subprocess.run([*CLI, "enqueue", "true"], env=env, capture_output=True, text=True), EXIT_USAGE, "no folder")
    assert not typo.parent.exists()  # nothing was created
    # the default data folder is still created on first use
    default = clean_env(tmp_path, db=None)
    proc = subprocess.run([*CLI, "status", "--json"], env=default, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, describe(proc)
    assert (tmp_path / "data" / "queuectl" / "queue.db").exists()


def test_detached_workers_hint_keeps_the_db_option(run: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    ok(run("status"))
    env = clean_env(tmp_path, db=None)
    proc = subprocess.run(
        [*CLI, "--db", url, "worker", "start", "--detach", "--burst", "--log", str(tmp_path / "w.log")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.rstrip().endswith(f"stop with: queuectl --db {url} worker stop"), proc.stdout
    pid = int(re.search(r"supervisor pid (\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}") and _state(pid) not in ("Z", "X"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or _state(pid) in ("Z", "X"), "the burst supervisor did not exit"


def _state(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


def test_enqueue_errors_say_what_and_where(run: Cli) -> None:
    unterminated, after, on_failure = run.many(
        ("enqueue", '{"command": "x}'),
        ("enqueue", "x", "--after", "nope"),
        ("enqueue", "x", "--on-failure-of", "nope"),
    )
    line = fails(unterminated, EXIT_USAGE, "malformed JSON job", "column")
    assert "at at" not in line
    fails(after, EXIT_NOT_FOUND, "no job 'nope'")  # not found, as the README's exit codes say
    fails(on_failure, EXIT_NOT_FOUND, "no job 'nope'")
    in_file = run("enqueue", "--file", "-", input='echo 1\n{"command": "x", "after": ["nope"]}\n')
    fails(in_file, EXIT_NOT_FOUND, "line 2:", "no job 'nope'", "nothing was enqueued")
    assert run.stored_ids() == []
    # a shell brace group is a command, not broken JSON; a JSON command of another type says so
    brace, number = run.many(
        ("enqueue", "{ echo a; echo b; } > out.txt", "--id", "brace"), ("enqueue", '{"command": 5}')
    )
    assert ok(brace) == "brace\n"
    assert json.loads(ok(run("show", "brace", "--json")))["command"] == "{ echo a; echo b; } > out.txt"
    fails(number, EXIT_USAGE, "command", "a string")


# --- long operations say what they do -----------------------------------------------------------


def test_a_big_enqueue_and_purge_show_progress_on_a_terminal_only(run: Cli, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f'{{"command": "true", "id": "j{i}", "queue": "bulk"}}\n' for i in range(30_000)))
    assert jobs.stat().st_size >= 1 << 20
    code, shown, stdout = in_terminal(run, "enqueue", "--file", str(jobs), stdout_pipe=True)
    assert code == EXIT_OK and len(stdout.splitlines()) == 30000  # the ids; the progress bar on the terminal
    assert "enqueueing" in shown and "lines" in shown, shown
    store = run._store()
    try:
        from queuectl.core.models import CANCELLED, Job

        with store.unit():
            store.insert_jobs(
                Job(id=f"c{i}", command="true", state=CANCELLED, created_at=1.0, updated_at=1.0, finished_at=1.0)
                for i in range(12_000)
            )
    finally:
        store.close()
    code, shown, stdout = in_terminal(run, "purge", "--state", "cancelled", "--yes", stdout_pipe=True)
    assert code == EXIT_OK and stdout == "deleted 12000 job(s)\n"
    assert "purging" in shown, shown


def test_piped_runs_print_no_progress(run: Cli, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    from queuectl.cli.jobs import PROGRESS_BYTES

    jobs.write_text(("true " + "x" * 59 + "\n") * 20_000)  # big enough for a bar on a terminal
    assert jobs.stat().st_size >= PROGRESS_BYTES
    piped = run("enqueue", "--file", str(jobs))
    assert piped.returncode == EXIT_OK and len(piped.stdout.splitlines()) == 20000
    assert piped.stderr.startswith("queuectl: enqueued 20000 job(s) as batch") and "\r" not in piped.stderr


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("pseudo-terminals and /proc: Linux", allow_module_level=True)


def test_show_in_a_pipe_cuts_no_attempt(run: Cli) -> None:
    """QA: piped, ``show``'s attempts table was drawn 80 columns wide, the worker id, pid and
    times ending in ellipses; now it is TSV like every other table in a pipe."""
    ok(run("enqueue", "echo hi", "--id", "a1"))
    proc = run("worker", "start", "--burst")
    assert proc.returncode == EXIT_OK, describe(proc)
    attempt = ok_json(run("show", "a1", "--json"))["history"][0]
    run.env["COLUMNS"] = "80"  # what a pipe gets without COLUMNS
    piped = ok(run("show", "a1"))
    assert "…" not in piped
    header, row = [line.split("\t") for line in piped.splitlines()[-2:]]
    assert header[:6] == ["#", "worker", "host", "pid", "claimed", "ended"]
    cells = dict(zip(header, row, strict=True))
    assert (cells["#"], cells["worker"], cells["pid"]) == ("1", attempt["worker"], str(attempt["pid"]))
    assert cells["claimed"] == attempt["claimed_at"] and cells["ended"] == attempt["ended_at"]
    assert cells["how"] == attempt["ended"] and cells["exit"] == "0"


def test_status_in_a_pipe_keeps_workers_and_paused_queues(run: Cli) -> None:
    """QA: piped, ``status`` printed the state counts only; ``status | grep workers`` found nothing."""
    run.enqueue_lines('{"command": "true", "queue": "builds"}')
    ok(run("queue", "pause", "builds"))
    ok(run("queue", "pause", "api", "--create"))
    now = time.time()
    register_workers(run, WorkerInfo("w1-abc", "host", 1, "running", now, now, "*", 1, []))
    rows = tsv(run("status"))
    assert rows[0] == ["state", "count"] and ["pending", "1"] in rows and ["total", "1"] in rows
    assert rows[-2:] == [["workers alive", "1"], ["paused queues", "api,builds"]]
    assert all(len(row) == 2 for row in rows)
