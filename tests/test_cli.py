"""End-to-end tests of the ``queuectl`` command line: the real CLI, run as a subprocess.

Every test gets its own SQLite file (``QUEUECTL_DB=sqlite:///<tmp_path>/q.db``) and data directory
(``XDG_DATA_HOME=<tmp_path>/data``), and runs in ``tmp_path``. Error paths check the exact exit code
(see ``queuectl/errors.py``) and that stderr is exactly one ``queuectl: error: ...`` line with no
traceback.

Speed: each run costs a Python start (0.2 s or more), so calls that do not depend on each other go
out together (:meth:`Cli.many`), and some checks read the database in-process through the store
API instead of spawning ``show``/``list`` again.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import pytest

from queuectl.core import lifecycle
from queuectl.core.config import CONFIG_KEYS as ALL_CONFIG_KEYS
from queuectl.core.errors import (
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_READ_ONLY,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from queuectl.core.models import STATES

CLI = [sys.executable, "-m", "queuectl"]
TIMEOUT_S = 60
MAX_COMMAND_BYTES = 128 * 1024
FAR_FUTURE = "2099-01-01T00:00:00Z"
FAR_FUTURE_EPOCH = datetime(2099, 1, 1, tzinfo=timezone.utc).timestamp()
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CONFIG_KEYS = tuple(ALL_CONFIG_KEYS)
ORIGINAL_CONFIG_KEYS = {
    "max-retries",
    "backoff-base",
    "backoff-max",
    "lease",
    "heartbeat",
    "job-timeout",
    "shutdown-grace",
    "kill-grace",
    "poll-interval",
}

Call = Union[Sequence[str], tuple[Sequence[str], str]]  # args, or (args, stdin)


# --- helpers ------------------------------------------------------------------------------------


def clean_env(tmp_path: Path, db: Optional[str] = "default") -> dict[str, str]:
    """The test environment: no inherited QUEUECTL_* variable, a private data dir, wide output.

    ``db="default"`` sets QUEUECTL_DB to ``<tmp_path>/q.db``; ``db=None`` leaves it unset.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"  # stable Rich tables and help text, not wrapped at 80
    if db == "default":
        env["QUEUECTL_DB"] = f"sqlite:///{tmp_path / 'q.db'}"
    elif db is not None:
        env["QUEUECTL_DB"] = db
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, input: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        env=env,
        cwd=str(cwd),
        input=input,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def start_cli(*args: str, env: dict[str, str], cwd: Path, input: Optional[str] = None) -> subprocess.Popen:
    """Start a run in the background; its whole stdin is there from the start (a file, not a pipe)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as stdin:
        stdin.write(input or "")
        stdin.seek(0)
        return subprocess.Popen(
            [*CLI, *args],
            env=env,
            cwd=str(cwd),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def start_cli_python(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """``python ARGS`` (not ``-m queuectl``) in the test environment."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


class Cli:
    """``run(*args, input=None) -> CompletedProcess`` on one test's database, plus helpers."""

    def __init__(self, tmp_path: Path, env: Optional[dict[str, str]] = None) -> None:
        self.tmp_path = tmp_path
        self.db = tmp_path / "q.db"
        self.env = env or clean_env(tmp_path)

    def __call__(self, *args: str, input: Optional[str] = None) -> subprocess.CompletedProcess:
        return run_cli(*args, env=self.env, cwd=self.tmp_path, input=input)

    def many(self, *calls: Call) -> list[subprocess.CompletedProcess]:
        """Independent runs, all at once; results in the order given."""
        procs = []
        for call in calls:
            args: Sequence[Any] = call
            stdin: Optional[str] = None
            if len(call) == 2 and not isinstance(call[0], str):  # (args, stdin)
                args, stdin = call[0], str(call[1])
            procs.append(start_cli(*args, env=self.env, cwd=self.tmp_path, input=stdin))
        return [finish(proc) for proc in procs]

    # in-process reads through the store API (no subprocess), for the checks around a run

    def _store(self) -> Any:
        from queuectl.store.sql.sqlite import SqliteStore

        return SqliteStore(str(self.db))

    def stored(self) -> list[dict[str, Any]]:
        """Every job, newest first."""
        store = self._store()
        try:
            return [job.to_dict() for job in store.list_jobs(limit=1_000_000)]
        finally:
            store.close()

    def stored_ids(self) -> list[str]:
        return [job["id"] for job in self.stored()]

    def stored_job(self, job_id: str) -> dict[str, Any]:
        store = self._store()
        try:
            job = store.get(job_id)
        finally:
            store.close()
        assert job is not None, job_id
        return job.to_dict()

    def make_dead(self, queue: str, job_id: str) -> None:
        """Move ``job_id`` (alone in ``queue``) to the DLQ the way a worker would: claim, then finish."""
        from queuectl.core.models import DEAD, Lease, Outcome

        store = self._store()
        try:
            now = time.time()
            claimed = store.claim("test-worker", [queue], now, 30.0)
            assert [job.id for job in claimed] == [job_id]
            lease = Lease(job_id, "test-worker", claimed[0].attempts)
            outcome = Outcome(DEAD, now, exit_code=1, last_error="exit code 1", output="boom\n", duration=0.01)
            assert lifecycle.finish(store, lease, outcome)
        finally:
            store.close()

    def enqueue_lines(self, *lines: str) -> None:
        text = "".join(line + "\n" for line in lines)
        enqueued(self("enqueue", "--file", "-", input=text), len(lines))

    def enqueue_dead(self, *job_ids: str) -> None:
        """Jobs that ran out of retries, each alone in queue ``doomed-<id>``."""
        self.enqueue_lines(
            *(
                json.dumps({"id": job_id, "command": "exit 1", "max_retries": 0, "queue": f"doomed-{job_id}"})
                for job_id in job_ids
            )
        )
        for job_id in job_ids:
            self.make_dead(f"doomed-{job_id}", job_id)


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"args={proc.args[3:]!r} rc={proc.returncode}\nstdout={proc.stdout!r}\nstderr={proc.stderr!r}"


def ok(proc: subprocess.CompletedProcess) -> str:
    """Assert success with a silent stderr; returns stdout."""
    assert proc.returncode == EXIT_OK, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.stderr == "", describe(proc)
    return proc.stdout


def enqueued(proc: subprocess.CompletedProcess, count: int) -> list[str]:
    """Assert an ``enqueue --file`` of ``count`` jobs: their ids on stdout, one a line, and one
    line naming the batch on stderr; returns the ids."""
    assert proc.returncode == EXIT_OK, describe(proc)
    ids = proc.stdout.splitlines()
    assert len(ids) == count and all(ids), describe(proc)
    assert re.fullmatch(
        rf"queuectl: enqueued {count} job\(s\) as batch \w+(; queuectl wait --batch \w+)?\n", proc.stderr
    )
    return ids


def ok_json(proc: subprocess.CompletedProcess) -> Any:
    return json.loads(ok(proc))


def fails(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Assert a queuectl error: exit ``code``, no stdout, exactly one ``queuectl: error:`` line."""
    assert proc.returncode == code, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, describe(proc)
    assert proc.stderr.endswith("\n"), describe(proc)
    assert lines[0].startswith("queuectl: error: "), describe(proc)
    assert proc.stdout == "", describe(proc)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing\n{describe(proc)}"
    return lines[0]


def usage_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A command-line parsing error from Typer itself: exit 2 and one ``queuectl: error:`` line,
    as every other error (not Click's usage, hint and error lines), naming the command's help."""
    line = fails(proc, EXIT_USAGE, *fragments)
    assert line.endswith(" --help"), describe(proc)


def listed_ids(proc: subprocess.CompletedProcess) -> list[str]:
    return [job["id"] for job in ok_json(proc)]


def epoch(text: Optional[str]) -> Optional[float]:
    """An RFC 3339 time of the JSON output (``2026-12-01T09:12:17.123Z``) as seconds since the epoch."""
    if text is None:
        return None
    assert text.endswith("Z") and len(text) == 24, text  # UTC, to the millisecond
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def shown_job(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    """``show --json``, its times read back as epoch seconds (to the millisecond)."""
    from queuectl.service.shapes import JOB_TIMES

    job = ok_json(proc)
    return {key: epoch(value) if key in JOB_TIMES else value for key, value in job.items()}


# --- enqueue ------------------------------------------------------------------------------------


def test_enqueue_plain_command_prints_an_id_and_stores_defaults(run: Cli) -> None:
    out = ok(run("enqueue", "echo hi"))
    job_id = out.strip()
    assert out == job_id + "\n" and len(job_id) == 10
    other = ok(run("enqueue", "echo there")).strip()
    assert other != job_id
    shown, detail, table, listed = run.many(
        ("show", job_id, "--json"),
        ("show", job_id),
        ("list",),
        ("list", "--json"),
    )
    job = shown_job(shown)
    assert job["id"] == job_id and job["command"] == "echo hi"
    assert (job["state"], job["queue"]) == ("pending", "default")
    assert (job["priority"], job["max_retries"], job["attempts"]) == (0, 3, 0)
    assert job["timeout"] is None and job["cwd"] is None and job["env"] == {}
    assert abs(job["run_at"] - time.time()) < 60
    assert job["run_at"] == job["created_at"]
    assert listed_ids(listed) == [other, job_id]  # newest first
    assert job_id in ok(detail) and "echo hi" in detail.stdout and "pending" in detail.stdout
    assert job_id in ok(table) and other in table.stdout


def test_enqueue_json_job_stores_every_field(run: Cli, tmp_path: Path) -> None:
    spec = {
        "id": "json-1",
        "command": "echo from json",
        "max_retries": 7,
        "priority": 9,
        "queue": "builds",
        "delay": "2h",
        "timeout": "10m",
        "cwd": str(tmp_path),
        "env": {"GREETING": "hello", "EMPTY": ""},
    }
    # run_at as JSON, and numbers given as strings
    spec2 = {"id": "json-2", "command": "true", "run_at": FAR_FUTURE, "max_retries": "2", "timeout": 90}
    first, second = run.many(("enqueue", json.dumps(spec)), ("enqueue", json.dumps(spec2)))
    assert (ok(first), ok(second)) == ("json-1\n", "json-2\n")
    job, job2 = (shown_job(proc) for proc in run.many(("show", "json-1", "--json"), ("show", "json-2", "--json")))
    assert job["command"] == "echo from json"
    assert (job["max_retries"], job["priority"], job["queue"]) == (7, 9, "builds")
    assert job["timeout"] == 600
    assert job["cwd"] == str(tmp_path)
    assert job["env"] == {"GREETING": "hello", "EMPTY": ""}
    assert job["run_at"] - job["created_at"] == pytest.approx(7200, abs=1)
    assert job2["run_at"] == FAR_FUTURE_EPOCH
    assert (job2["max_retries"], job2["timeout"]) == (2, 90)


def test_enqueue_options_are_stored(run: Cli, tmp_path: Path) -> None:
    results = run.many(
        (
            "enqueue",
            "echo opts",
            "--id",
            "opt-1",
            "--max-retries",
            "5",
            "--priority",
            "-3",
            "--queue",
            "builds",
            "--delay",
            "30s",
            "--timeout",
            "15m",
            "--cwd",
            str(tmp_path),
            "--env",
            "A=1",
            "-e",
            "B=x=y",
        ),
        ("enqueue", "true", "--id", "at-z", "--run-at", FAR_FUTURE),
        ("enqueue", "true", "--id", "at-off", "--run-at", "2099-01-01T02:00:00+02:00"),
        ("enqueue", '{"command": "true", "priority": 1}', "--id", "ovr", "-p", "4"),
    )
    assert [ok(proc) for proc in results] == ["opt-1\n", "at-z\n", "at-off\n", "ovr\n"]
    shown = run.many(*(("show", job_id, "--json") for job_id in ("opt-1", "at-z", "at-off", "ovr")))
    opt, at_z, at_off, ovr = (shown_job(proc) for proc in shown)
    assert (opt["max_retries"], opt["priority"], opt["queue"]) == (5, -3, "builds")
    assert opt["run_at"] - opt["created_at"] == pytest.approx(30, abs=1)
    assert opt["run_at"] > time.time() + 10
    assert opt["timeout"] == 900
    assert opt["cwd"] == str(tmp_path)
    assert opt["env"] == {"A": "1", "B": "x=y"}
    # --run-at with Z, and with an offset naming the same instant: in the future
    assert at_z["run_at"] == at_off["run_at"] == FAR_FUTURE_EPOCH
    assert at_z["run_at"] > time.time()
    # an option overrides the JSON field
    assert ovr["priority"] == 4


def test_a_relative_cwd_is_where_it_was_typed(run: Cli, tmp_path: Path) -> None:
    """``--cwd .`` means the folder the user is in, not wherever a worker was started."""
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    enqueue = run_cli("enqueue", "pwd", "--id", "here", "--cwd", "sub", env=run.env, cwd=project)
    assert ok(enqueue) == "here\n"
    assert shown_job(run("show", "here", "--json"))["cwd"] == str(project / "sub")


def test_enqueue_uses_configured_max_retries_and_job_timeout(run: Cli) -> None:
    assert [
        ok(proc) for proc in run.many(("config", "set", "max-retries", "6"), ("config", "set", "job-timeout", "90s"))
    ] == ["max-retries = 6\n", "job-timeout = 90\n"]
    plain, explicit = run.many(("enqueue", "true"), ("enqueue", "true", "--max-retries", "0", "--timeout", "5s"))
    job = run.stored_job(ok(plain).strip())
    assert (job["max_retries"], job["timeout"]) == (6, 90)
    job = run.stored_job(ok(explicit).strip())
    assert (job["max_retries"], job["timeout"]) == (0, 5)


def test_enqueue_duplicate_id_is_a_conflict_and_writes_nothing(run: Cli) -> None:
    ok(run("enqueue", "echo original", "--id", "dup"))
    before = run.stored()
    plain, as_json = run.many(
        ("enqueue", "echo replacement", "--id", "dup", "--priority", "9"),
        ("enqueue", '{"id": "dup", "command": "echo json"}'),
    )
    fails(plain, EXIT_CONFLICT, "'dup'", "already exists")
    fails(as_json, EXIT_CONFLICT, "'dup'")
    listed = ok_json(run("list", "--json"))
    assert [job["id"] for job in listed] == [job["id"] for job in before]
    assert [epoch(job["updated_at"]) for job in listed] == [
        pytest.approx(job["updated_at"], abs=0.001) for job in before
    ]
    assert [(job["id"], job["command"], job["priority"]) for job in listed] == [("dup", "echo original", 0)]


ENQUEUE_INVALID = {
    "empty-command": (("",), ("empty command",)),
    "blank-command": (("   ",), ("empty command",)),
    "no-command": ((), ("nothing to enqueue",)),
    "malformed-json": (('{"command": "echo hi"',), ("malformed JSON",)),
    "json-not-object-field": (('{"command": "x", "colour": "red"}',), ("unknown job field", "colour", "valid fields")),
    "misspelt-command": (('{"cmd": "x"}',), ("unknown job field", "cmd")),
    "json-empty-command": (('{"command": ""}',), ("empty command",)),
    "json-command-number": (('{"command": 5}',), ("command", "expected a string")),
    "nul-byte": (('{"command": "a\\u0000b"}',), ("NUL byte",)),
    "json-bool-priority": (('{"command": "x", "priority": true}',), ("priority",)),
    "bad-delay": (("x", "--delay", "soon"), ("delay", "'soon'")),
    "negative-delay": (("x", "--delay", "-5s"), ("delay",)),
    "delay-over-10-years": (("x", "--delay", "5000w"), ("delay", "out of range")),
    "delay-and-run-at": (("x", "--delay", "30s", "--run-at", FAR_FUTURE), ("delay or run_at",)),
    "naive-run-at": (("x", "--run-at", "2099-01-01T00:00:00"), ("no timezone",)),
    "garbage-run-at": (("x", "--run-at", "next tuesday"), ("ISO-8601",)),
    "negative-timeout": (("x", "--timeout", "-5s"), ("timeout",)),
    "zero-timeout": (("x", "--timeout", "0"), ("timeout", "more than 0")),
    "bad-queue-space": (("x", "--queue", "bad queue"), ("invalid queue name",)),
    "bad-queue-slash": (("x", "--queue", "a/b"), ("invalid queue name",)),
    "queue-too-long": (("x", "--queue", "q" * 65), ("invalid queue name",)),
    "bad-id": (("x", "--id", "no spaces"), ("invalid job id",)),
    "negative-max-retries": (("x", "--max-retries", "-1"), ("max_retries",)),
    "max-retries-too-big": (("x", "--max-retries", "1001"), ("max_retries",)),
    "priority-too-big": (("x", "--priority", "1000001"), ("priority",)),
    "env-without-equals": (("x", "--env", "NOEQUALS"), ("KEY=VALUE", "NOEQUALS")),
    "env-bad-name": (("x", "--env", "1BAD=v"), ("invalid variable name",)),
    "env-reserved": (("x", "--env", "QUEUECTL_DB=sqlite:///x"), ("reserved",)),
    "empty-cwd": (("x", "--cwd", ""), ("cwd",)),
}


def refusals(run: Cli, command: tuple[str, ...], cases: dict[str, Any]) -> list[str]:
    """Run every case (``name: (args, expected words)``) at once; the ones not refused with exit 2
    and one clear line, each with what went wrong."""
    names = list(cases)
    results = run.many(*((*command, *cases[name][0]) for name in names))
    problems = []
    for name, proc in zip(names, results, strict=True):
        try:
            fails(proc, EXIT_USAGE, *cases[name][1])
        except AssertionError as exc:
            problems.append(f"[{name}] {exc}")
    return problems


def test_enqueue_invalid_input_exits_2_and_writes_nothing(run: Cli) -> None:
    """Every refusal at once (they are independent): exit 2, one line naming the problem."""
    assert ok_json(run("list", "--json")) == []  # creates the database before the burst
    assert refusals(run, ("enqueue",), ENQUEUE_INVALID) == []
    assert ok_json(run("list", "--json")) == []


def test_enqueue_command_size_limit_and_nul_in_a_file(run: Cli) -> None:
    # argv cannot carry more than 128 KiB in one argument, so the big commands go through --file -
    exact = "echo " + "a" * (MAX_COMMAND_BYTES - 5)
    over, at_limit, nul = run.many(
        (("enqueue", "--file", "-"), exact + "a\n"),
        (("enqueue", "--file", "-"), exact + "\n"),
        (("enqueue", "--file", "-"), "echo ok\necho a\x00b\n"),
    )
    fails(over, EXIT_USAGE, "line 1", "128 KiB")
    fails(nul, EXIT_USAGE, "line 2", "NUL")
    enqueued(at_limit, 1)
    (job,) = run.stored()
    assert job["command"] == exact and len(job["command"].encode()) == MAX_COMMAND_BYTES


def test_enqueue_usage_errors(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_text("true\n")
    results = run.many(
        ("enqueue", "x", "--priority", "high"),
        ("enqueue", "x", "--no-such-option"),
        ("no-such-command",),
        ("list", "--limit", "0"),
        ("enqueue", "x", "--file", "jobs.txt"),
        ("enqueue", "--file", "jobs.txt", "--id", "x"),
    )
    usage_error(results[0], "--priority")
    usage_error(results[1], "--no-such-option")
    usage_error(results[2], "no-such-command")
    usage_error(results[3], "--limit")
    fails(results[4], EXIT_USAGE, "not both")
    fails(results[5], EXIT_USAGE, "--id")
    assert run.stored() == []


# --- enqueue --file -----------------------------------------------------------------------------


def test_enqueue_file_inserts_every_job_line(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_text(
        "echo one\n"
        "\n"
        "# a comment, skipped\n"
        '{"id": "f-json", "command": "echo two", "priority": 5, "queue": "builds"}\n'
        "   \n"
        "  # an indented comment\n"
        "echo three | tr a-z A-Z\n"
        '{"command": "echo four", "max_retries": 1}'  # no final newline
    )
    enqueued(run("enqueue", "--file", "jobs.txt", "--queue", "batch", "--max-retries", "2"), 4)
    listed = ok_json(run("list", "--json"))
    # file order is kept (FIFO): newest first in the listing
    assert [job["command"] for job in listed] == ["echo four", "echo three | tr a-z A-Z", "echo two", "echo one"]
    by_command = {job["command"]: job for job in listed}
    assert by_command["echo two"]["id"] == "f-json"
    # the options apply to every line; a line's own JSON fields win
    assert (by_command["echo two"]["queue"], by_command["echo two"]["priority"]) == ("builds", 5)
    assert (by_command["echo one"]["queue"], by_command["echo one"]["max_retries"]) == ("batch", 2)
    assert by_command["echo four"]["max_retries"] == 1


def test_enqueue_file_with_a_bad_line_inserts_nothing(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "echo existing", "--id", "existing"))
    cases = {
        "bad-json.txt": ('echo one\n\n{"command": "x"\necho four\n', "malformed JSON"),
        "bad-field.txt": ('echo one\n# c\n{"command": "x", "bogus": 1}\n', "bogus"),
        "bad-delay.txt": ('echo one\necho two\n{"command": "x", "delay": "later"}\necho four\n', "delay"),
    }
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text)
    results = run.many(*(("enqueue", "--file", name) for name in cases))
    for (name, (_, reason)), proc in zip(cases.items(), results, strict=True):
        line = fails(proc, EXIT_USAGE, "line 3", reason, "nothing was enqueued")
        assert "line 1" not in line and "line 4" not in line, name
    assert listed_ids(run("list", "--json")) == ["existing"]


def test_enqueue_file_duplicate_id_inserts_nothing(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "echo existing", "--id", "existing"))
    (tmp_path / "dup-inside.txt").write_text(
        'echo a\n{"id": "same", "command": "echo b"}\n{"id": "same", "command": "echo c"}\necho d\n'
    )
    (tmp_path / "dup-db.txt").write_text('echo a\n{"id": "existing", "command": "echo b"}\n')
    inside, against_db = run.many(("enqueue", "--file", "dup-inside.txt"), ("enqueue", "--file", "dup-db.txt"))
    # the error names the line (and the one it repeats) and says that nothing was written
    fails(inside, EXIT_CONFLICT, "line 3: job id 'same' is also on line 2", "nothing was enqueued")
    fails(against_db, EXIT_CONFLICT, "line 2:", "'existing' already exists", "nothing was enqueued")
    listed = ok_json(run("list", "--json"))
    assert [(job["id"], job["command"]) for job in listed] == [("existing", "echo existing")]


def test_enqueue_file_with_a_unique_key_twice_names_both_lines(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "sleep 60", "--unique-key", "held", "--id", "holder"))
    (tmp_path / "twice.txt").write_text("echo a\necho b\n")
    (tmp_path / "taken.txt").write_text('echo a\n{"command": "echo b", "unique_key": "held"}\n')
    twice, taken = run.many(
        ("enqueue", "--file", "twice.txt", "--unique-key", "UK"), ("enqueue", "--file", "taken.txt")
    )
    # the clash is inside the file: no other job holds the key, so the error says which lines
    fails(twice, EXIT_CONFLICT, "line 2: unique key 'UK' is also line 1's", "nothing was enqueued")
    fails(taken, EXIT_CONFLICT, "line 2:", "'held'", "nothing was enqueued")
    assert listed_ids(run("list", "--json")) == ["holder"]


def test_enqueue_file_from_stdin(run: Cli) -> None:
    good, empty, bad = run.many(
        (("enqueue", "--file", "-"), 'echo a\n# comment\n\n{"id": "stdin-b", "command": "echo b"}\necho c\n'),
        (("enqueue", "-f", "-"), ""),
        (("enqueue", "-f", "-"), "echo ok\n\n{oops\n"),
    )
    enqueued(good, 3)
    enqueued(empty, 0)
    fails(bad, EXIT_USAGE, "line 3", "malformed JSON")
    assert sorted(job["command"] for job in run.stored()) == ["echo a", "echo b", "echo c"]


def test_enqueue_file_with_crlf_line_endings(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "dos.txt").write_bytes(b'echo a\r\n{"command": "echo b"}\r\n# c\r\n\r\necho c\r\n')
    enqueued(run("enqueue", "--file", "dos.txt"), 3)
    assert sorted(job["command"] for job in run.stored()) == ["echo a", "echo b", "echo c"]


def test_slow_stdin_does_not_lock_the_queue(run: Cli) -> None:
    import sqlite3

    ok(run("status", "--json"))  # creates the database
    proc = subprocess.Popen(
        [*CLI, "enqueue", "--file", "-"],
        env=run.env,
        cwd=str(run.tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    locked = False
    try:
        assert proc.stdin is not None
        proc.stdin.write("echo first\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 4  # the producer is slow: the next line comes later
        while time.monotonic() < deadline and not locked and proc.poll() is None:
            time.sleep(0.25)
            conn = sqlite3.connect(str(run.db), timeout=0.2, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")  # what any other writer (a worker's claim) needs
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                locked = True
            finally:
                conn.close()
        proc.stdin.write("echo second\n")
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None and proc.stderr is not None
    done = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.read(), proc.stderr.read())
    enqueued(done, 2)
    assert not locked, "other writers were locked out while enqueue waited for stdin"


def test_enqueue_stdin_with_crlf_line_endings(run: Cli) -> None:
    enqueued(run("enqueue", "--file", "-", input='echo a\r\n{"command": "echo b"}\r\n'), 2)
    assert sorted(job["command"] for job in run.stored()) == ["echo a", "echo b"]  # observed: 'echo a\r'


def test_enqueue_file_that_cannot_be_read(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "latin1.txt").write_bytes(b"echo caf\xe9\n")
    missing, folder, latin1 = run.many(
        ("enqueue", "--file", "missing.txt"),
        ("enqueue", "--file", "folder"),
        ("enqueue", "--file", "latin1.txt"),
    )
    fails(missing, EXIT_USAGE, "no such file", "missing.txt")
    fails(folder, EXIT_USAGE, "directory")
    fails(latin1, EXIT_USAGE, "UTF-8", "nothing was enqueued")
    assert ok_json(run("list", "--json")) == []


# --- list, show, status, cancel -----------------------------------------------------------------


def test_list_filters_limit_and_bad_state(run: Cli) -> None:
    run.enqueue_lines(
        *(
            json.dumps({"id": job_id, "command": f"echo {job_id}", "queue": queue})
            for job_id, queue in (
                ("d1", "default"),
                ("b1", "builds"),
                ("d2", "default"),
                ("b2", "builds"),
                ("d3", "default"),
            )
        )
    )
    assert ok(run("cancel", "d2")) == "cancelled d2\n"
    (everything, builds, cancelled, pending_default, dead, nope, limited, table, empty_json, bad, both, both_tsv) = (
        run.many(
            ("list", "--json"),
            ("list", "--json", "--queue", "builds"),
            ("list", "--json", "--state", "cancelled"),
            ("list", "--json", "-s", "pending", "-q", "default"),
            ("list", "--json", "--state", "dead"),
            ("list", "--json", "--queue", "nope"),
            ("list", "--json", "-n", "2"),
            ("list", "--state", "pending", "--limit", "2"),
            ("list", "--json", "--state", "processing"),
            ("list", "--state", "bogus"),
            ("list", "--json", "--state", "pending", "--state", "cancelled", "-q", "default"),
            ("list", "--state", "pending", "-s", "cancelled", "-n", "2"),
        )
    )
    assert listed_ids(everything) == ["d3", "b2", "d2", "b1", "d1"]
    assert listed_ids(builds) == ["b2", "b1"]
    assert listed_ids(cancelled) == ["d2"]
    assert listed_ids(pending_default) == ["d3", "d1"]
    assert listed_ids(dead) == listed_ids(nope) == listed_ids(empty_json) == []
    # a limit that hides some says how many matched in all, on stderr (stdout stays data)
    assert [job["id"] for job in json.loads(limited.stdout)] == ["d3", "b2"]
    assert limited.returncode == 0 and limited.stderr == "queuectl: 2 of 5 shown; --limit N for more\n"
    assert table.stdout.splitlines()[1:] and "d1" not in table.stdout
    assert table.stderr == "queuectl: 2 of 4 shown; --limit N for more\n"
    # --state twice combines the states, as purge does
    assert listed_ids(both) == ["d3", "d2", "d1"]
    assert [line.split("\t")[0] for line in both_tsv.stdout.splitlines()] == ["id", "d3", "b2"]
    assert both_tsv.stderr == "queuectl: 2 of 5 shown; --limit N for more\n"
    line = fails(bad, EXIT_USAGE, "unknown state 'bogus'", "valid states")
    for state in STATES:
        assert state in line


def test_show_unknown_id_is_not_found(run: Cli) -> None:
    for proc in run.many(("show", "nope"), ("show", "nope", "--json")):
        fails(proc, EXIT_NOT_FOUND, "'nope'")


def test_status_counts(run: Cli) -> None:
    assert ok_json(run("status", "--json")) == {
        "states": {state: 0 for state in STATES},
        "total": 0,
        "queues": [],
        "paused": [],
        "workers": {"alive": 0, "registered": 0, "autoscaling": []},
    }
    run.enqueue_lines("echo 1", "echo 2", '{"command": "echo 3", "queue": "builds"}', '{"id": "c1", "command": "x"}')
    ok(run("cancel", "c1"))
    run.enqueue_dead("dead1")
    as_json, text, tsv = run.many(("status", "--json"), ("status", "--format", "table"), ("status",))
    summary = ok_json(as_json)
    assert summary["states"] == {**{state: 0 for state in STATES}, "pending": 3, "cancelled": 1, "dead": 1}
    assert summary["total"] == 5
    # every queue, with every state (zeros too) and whether it is paused
    zeros = {state: 0 for state in STATES}
    assert summary["queues"] == [
        {"name": "builds", "paused": False, "states": {**zeros, "pending": 1}, "total": 1},
        {"name": "default", "paused": False, "states": {**zeros, "pending": 2, "cancelled": 1}, "total": 3},
        {"name": "doomed-dead1", "paused": False, "states": {**zeros, "dead": 1}, "total": 1},
    ]
    assert summary["workers"] == {"alive": 0, "registered": 0, "autoscaling": []} and summary["paused"] == []
    assert "pending" in ok(text) and "workers alive: 0" in text.stdout
    states = [f"{s}\t{summary['states'][s]}" for s in STATES]
    assert ok(tsv).splitlines() == ["state\tcount", *states, "total\t5", "workers alive\t0", "paused queues\t"]


def test_cancel(run: Cli) -> None:
    run.enqueue_lines('{"id": "c1", "command": "sleep 100"}', '{"id": "c2", "command": "sleep 100", "delay": "1h"}')
    run.enqueue_dead("gone")
    assert ok(run("cancel", "c1")) == "cancelled c1\n"
    job = run.stored_job("c1")
    assert job["state"] == "cancelled" and job["finished_at"] is not None
    assert run.stored_job("c2")["state"] == "pending"  # only the job named
    again, unknown, dead, delayed = run.many(("cancel", "c1"), ("cancel", "nope"), ("cancel", "gone"), ("cancel", "c2"))
    fails(again, EXIT_CONFLICT, "c1", "already finished", "cancelled")
    fails(unknown, EXIT_NOT_FOUND, "'nope'")
    fails(dead, EXIT_CONFLICT, "gone", "dead")
    assert ok(delayed) == "cancelled c2\n"  # a delayed job too
    assert {job["id"]: job["state"] for job in run.stored()} == {"c1": "cancelled", "c2": "cancelled", "gone": "dead"}


# --- dead letter queue --------------------------------------------------------------------------


def test_dlq_list_and_retry(run: Cli) -> None:
    ok(run("enqueue", "echo alive", "--id", "alive"))
    run.enqueue_dead("x1", "x2", "x3")
    full, one, table = run.many(("dlq", "list", "--json"), ("dlq", "list", "--json", "--limit", "1"), ("dlq", "list"))
    dead = ok_json(full)
    assert [job["id"] for job in dead] == ["x3", "x2", "x1"]
    assert all(job["state"] == "dead" and job["attempts"] == 1 and job["exit_code"] == 1 for job in dead)
    assert listed_ids(one) == ["x3"]
    assert "x1" in ok(table) and "alive" not in table.stdout

    # one job
    assert ok(run("dlq", "retry", "x1")) == "requeued x1\n"
    again, alive, unknown, neither, both, shown, left = run.many(
        ("dlq", "retry", "x1"),
        ("dlq", "retry", "alive"),
        ("dlq", "retry", "nope"),
        ("dlq", "retry"),
        ("dlq", "retry", "x2", "--all"),
        ("show", "x1", "--json"),
        ("dlq", "list", "--json"),
    )
    fails(again, EXIT_CONFLICT, "x1", "pending", "not in the dead letter queue")
    fails(alive, EXIT_CONFLICT, "alive")
    fails(unknown, EXIT_NOT_FOUND, "'nope'")
    fails(neither, EXIT_USAGE, "job id or --all")
    fails(both, EXIT_USAGE, "not both")
    job = shown_job(shown)
    assert (job["state"], job["attempts"], job["finished_at"]) == ("pending", 0, None)
    assert job["run_at"] <= time.time()
    assert listed_ids(left) == ["x3", "x2"]

    # all of them
    assert ok(run("dlq", "retry", "--all")) == "requeued 2 job(s)\n"
    assert ok_json(run("dlq", "list", "--json")) == []
    assert {job["id"]: job["state"] for job in run.stored()} == {
        "alive": "pending",
        "x1": "pending",
        "x2": "pending",
        "x3": "pending",
    }
    assert ok(run("dlq", "retry", "--all")) == "requeued 0 job(s)\n"


def test_dlq_purge(run: Cli) -> None:
    ok(run("enqueue", "echo alive", "--id", "alive"))
    run.enqueue_dead("p1", "p2")
    # without --yes and without a terminal to ask on, it refuses (never a prompt on stdout)
    for refused in run.many((("dlq", "purge"), "y\n"), (("dlq", "purge"), "")):
        fails(refused, EXIT_USAGE, "--yes")
    assert len(run.stored()) == 3
    assert ok(run("dlq", "purge", "--yes")) == "deleted 2 job(s)\n"
    assert run.stored_ids() == ["alive"]  # only dead jobs go
    assert ok(run("dlq", "purge", "-y")) == "deleted 0 job(s)\n"
    assert listed_ids(run("list", "--json")) == ["alive"]


# --- config -------------------------------------------------------------------------------------


def test_config_get_set_list(run: Cli, tmp_path: Path) -> None:
    assert ok(run("config", "get", "max-retries")) == "3\n"
    sets = run.many(
        ("config", "set", "max-retries", "5"),
        ("config", "set", "lease", "2m"),
        ("config", "set", "backoff-base", "1.5"),
    )
    assert [ok(proc) for proc in sets] == ["max-retries = 5\n", "lease = 120\n", "backoff-base = 1.5\n"]
    assert ok(run("config", "set", "heartbeat", "60")) == "heartbeat = 60\n"  # exactly lease/2
    retries, lease, as_json, text = run.many(
        ("config", "get", "max-retries"),
        ("config", "get", "lease"),
        ("config", "list", "--json"),
        ("config", "list"),
    )
    assert (ok(retries), ok(lease)) == ("5\n", "120\n")
    listed = ok_json(as_json)
    assert set(CONFIG_KEYS) >= ORIGINAL_CONFIG_KEYS
    assert set(listed) == {"database", *CONFIG_KEYS}
    assert listed["database"] == f"sqlite:///{tmp_path / 'q.db'}"
    # typed: whole numbers as integers, the others as floats
    assert [listed[key] for key in ("max-retries", "lease", "heartbeat", "backoff-base")] == [5, 120, 60, 1.5]
    assert listed["poll-interval"] == 1 and listed["job-timeout"] == 0
    assert all(type(value) in (int, float) for key, value in listed.items() if key != "database")
    assert isinstance(listed["max-retries"], int) and isinstance(listed["backoff-base"], float)
    rows = [line.split("\t") for line in ok(text).splitlines()]
    assert rows[0] == ["key", "value", "default", "meaning"]
    assert ["max-retries", "5", "no"] == rows[1][:3] and ["kill-grace", "5", "yes"] in [row[:3] for row in rows]


CONFIG_INVALID = {
    "max-retries-negative": (("max-retries", "--", "-1"), ("max-retries", "out of range")),
    "max-retries-word": (("max-retries", "lots"), ("max-retries", "whole number")),
    "backoff-base-abc": (("backoff-base", "abc"), ("backoff-base", "'abc'")),
    "backoff-base-inf": (("backoff-base", "1e309"), ("backoff-base",)),
    "backoff-base-nan": (("backoff-base", "nan"), ("backoff-base",)),
    "backoff-base-below-1": (("backoff-base", "0.5"), ("backoff-base", "out of range")),
    "lease-1e309": (("lease", "1e309"), ("lease",)),
    "lease-zero": (("lease", "0"), ("lease", "out of range")),
    "lease-below-two-heartbeats": (("lease", "8"), ("heartbeat", "half the lease")),
    "heartbeat-over-half-lease": (("heartbeat", "20"), ("heartbeat", "half the lease")),
    "poll-interval-negative": (("poll-interval", "--", "-1"), ("poll-interval",)),
    "job-timeout-word": (("job-timeout", "forever"), ("job-timeout",)),
}


def test_config_set_invalid_values_exit_2_and_change_nothing(run: Cli) -> None:
    before = ok_json(run("config", "list", "--json"))
    assert refusals(run, ("config", "set"), CONFIG_INVALID) == []
    assert ok_json(run("config", "list", "--json")) == before


def test_config_set_negative_number_without_double_dash_is_a_usage_error(run: Cli) -> None:
    # "-1" reads as an option; the parser refuses it (exit 2) before queuectl sees the value
    for proc in run.many(("config", "set", "max-retries", "-1"), ("config", "set", "poll-interval", "-1")):
        usage_error(proc, "-1", "negative")
    for proc in run.many(("logs", "j1", "--tail", "-1"), ("queue", "limit", "ci", "-1"), ("worker", "stop", "w1")):
        usage_error(proc)
    assert ok(run("config", "get", "max-retries")) == "3\n"


def test_config_unknown_key_lists_the_valid_keys(run: Cli) -> None:
    for proc in run.many(("config", "get", "retries"), ("config", "set", "retries", "5")):
        line = fails(proc, EXIT_USAGE, "unknown config key 'retries'", "valid keys")
        for key in CONFIG_KEYS:
            assert key in line


def test_config_large_durations_round_trip(run: Cli) -> None:
    for proc in run.many(("config", "set", "job-timeout", "14d"), ("config", "set", "backoff-max", "30d")):
        ok(proc)
    job = run.stored_job(ok(run("enqueue", "true")).strip())
    assert job["timeout"] == 14 * 86400  # observed: None (the default "no timeout")
    timeout, backoff = run.many(("config", "get", "job-timeout"), ("config", "get", "backoff-max"))
    assert ok(timeout) == "1209600\n"  # observed: 1.2096e+06
    assert ok(backoff) == "2592000\n"  # observed: 2.592e+06


# --- database URLs, permissions, MongoDB --------------------------------------------------------


def test_redact_url() -> None:
    from queuectl.store import redact_url

    assert redact_url("mongodb://user:secret@db.example.com:27017/q") == "mongodb://user:***@db.example.com:27017/q"
    assert redact_url("mongodb+srv://u:p%40ss@cluster0.example.net/db?retryWrites=true") == (
        "mongodb+srv://u:***@cluster0.example.net/db?retryWrites=true"
    )
    assert redact_url("mongodb://u:s3c:r3t@h1:27017,h2:27017/db") == "mongodb://u:***@h1:27017,h2:27017/db"
    assert redact_url("mongodb://h1:27017/db") == "mongodb://h1:27017/db"
    assert redact_url("sqlite:////tmp/q.db") == "sqlite:////tmp/q.db"


def test_unescaped_password_is_not_printed(run: Cli) -> None:
    from queuectl.store import redact_url

    urls = ("mongodb://user:se/cret@127.0.0.1:9/q", "mongodb://user:se@cret@127.0.0.1:9/q")
    for url, proc in zip(urls, run.many(*(("--db", url, "status") for url in urls)), strict=True):
        line = fails(proc, EXIT_USAGE, "invalid MongoDB URL")
        assert "cret" not in line, line  # observed: ...user:se/cret@... and ...user:***@cret@...
        assert "cret" not in redact_url(url), redact_url(url)


class _Background:
    """A slow run started early, so that its wait overlaps the other tests."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.started = time.monotonic()
        self.proc = start_cli(*args, env=env, cwd=cwd)
        self.result: Optional[subprocess.CompletedProcess] = None
        self.elapsed: Optional[float] = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        self.result = finish(self.proc, timeout=120)
        self.elapsed = time.monotonic() - self.started

    def join(self) -> subprocess.CompletedProcess:
        self._thread.join(timeout=120)
        assert self.result is not None
        return self.result


@pytest.fixture(scope="module", autouse=True)
def mongo_unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _Background]]:
    """The two MongoDB runs wait out the 5 s server-selection timeout while the other tests run."""
    tmp = tmp_path_factory.mktemp("mongo")
    env = clean_env(tmp)
    runs = {
        "local": _Background(["--db", "mongodb://user:secret@127.0.0.1:9/q", "status"], env, tmp),
        # TEST-NET-1 (never answers) and no TLS: a warning first
        "remote": _Background(["--db", "mongodb://user:secret@192.0.2.1:9/q", "status"], env, tmp),
    }
    yield runs
    for background in runs.values():
        if background.proc.poll() is None:
            background.proc.kill()
            background.proc.wait()


def test_unreachable_mongodb_exits_5_quickly_without_the_password(mongo_unreachable: dict[str, _Background]) -> None:
    background = mongo_unreachable["local"]
    proc = background.join()
    line = fails(proc, EXIT_UNAVAILABLE, "cannot reach MongoDB", "user:***@127.0.0.1:9")
    assert "secret" not in line
    assert background.elapsed is not None and background.elapsed < 12


def test_mongodb_without_tls_warns_in_one_line(mongo_unreachable: dict[str, _Background]) -> None:
    proc = mongo_unreachable["remote"].join()
    assert proc.returncode == EXIT_UNAVAILABLE, describe(proc)
    assert "secret" not in proc.stderr and "Traceback" not in proc.stderr, describe(proc)
    warning, error = proc.stderr.splitlines()
    assert warning.startswith("queuectl: warning: ") and "tls=true" in warning, describe(proc)
    assert error.startswith("queuectl: error: cannot reach MongoDB at mongodb://user:***@192.0.2.1:9/q"), describe(proc)


def test_unsupported_db_url_exits_2(run: Cli, tmp_path: Path) -> None:
    mysql, mysql_write, empty_path, no_scheme = run.many(
        ("--db", "mysql://x", "status"),
        ("--db", "mysql://x", "enqueue", "true"),
        ("--db", "sqlite:///", "status"),
        ("--db", "queue.db", "status"),
    )
    fails(mysql, EXIT_USAGE, "unsupported database URL scheme 'mysql'", "sqlite:///")
    fails(mysql_write, EXIT_USAGE, "'mysql'")
    fails(empty_path, EXIT_USAGE, "sqlite URL without a file")
    fails(no_scheme, EXIT_USAGE, "unsupported database URL")
    assert sorted(os.listdir(tmp_path)) == []


def test_group_writable_database_is_refused(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "true", "--id", "j1"))
    db = tmp_path / "q.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for mode in (0o666, 0o620):
        db.chmod(mode)
        for proc in run.many(("list", "--json"), ("enqueue", "true")):
            fails(proc, EXIT_UNAVAILABLE, "writable by other users", f"chmod 600 {db}")
    db.chmod(0o600)
    assert listed_ids(run("list", "--json")) == ["j1"]


@pytest.mark.skipif(
    IS_ROOT,
    reason="running as root: file permissions are not enforced, so a 0400 "
    "database is still writable and the read-only path cannot be reached",
)
def test_read_only_database_reads_work_writes_exit_6(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "true", "--id", "j1"))
    ok(run("queue", "pause", "held"))
    db = tmp_path / "q.db"
    db.chmod(0o400)
    try:
        listed, shown, status, config, queues = run.many(
            ("list", "--json"),
            ("show", "j1", "--json"),
            ("status", "--json"),
            ("config", "get", "max-retries"),
            ("queue", "list", "--json"),
        )
        assert listed_ids(listed) == ["j1"]
        assert ok_json(shown)["state"] == "pending"
        assert ok_json(status)["states"]["pending"] == 1
        assert ok(config) == "3\n"
        assert ok_json(queues)["held"]["paused"] is True
        writes = run.many(
            ("enqueue", "true"),
            ("cancel", "j1"),
            ("config", "set", "max-retries", "5"),
            ("queue", "resume", "held"),
            ("dlq", "purge", "--yes"),
        )
        for proc in writes:
            fails(proc, EXIT_READ_ONLY, "read-only")
        assert listed_ids(run("list", "--json")) == ["j1"]
    finally:
        db.chmod(0o600)


@pytest.mark.skipif(IS_ROOT, reason="running as root: file permissions are not enforced")
def test_database_is_writable_again_after_a_read_only_spell(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "true", "--id", "j1"))
    db = tmp_path / "q.db"
    db.chmod(0o400)
    try:
        assert listed_ids(run("list", "--json")) == ["j1"]
    finally:
        db.chmod(0o600)
    assert ok(run("enqueue", "true", "--id", "j2")) == "j2\n"


# --- named queues -------------------------------------------------------------------------------


def test_queue_list_pause_resume(run: Cli) -> None:
    assert ok_json(run("queue", "list", "--json")) == []
    run.enqueue_lines('{"command": "true", "queue": "builds"}', "true", "true")
    # a queue with no job is most likely a typo: refused unless --create
    typo, resume_typo = run.many(("queue", "pause", "biulds"), ("queue", "resume", "biulds"))
    fails(typo, EXIT_NOT_FOUND, "no queue named 'biulds'", "builds, default", "--create")
    fails(resume_typo, EXIT_NOT_FOUND, "no queue named 'biulds'")
    assert [
        ok(proc) for proc in run.many(("queue", "pause", "builds"), ("queue", "pause", "empty-one", "--create"))
    ] == [
        "paused builds\n",
        "paused empty-one\n",
    ]
    queues, status, status_text, queues_text, again = run.many(
        ("queue", "list", "--json"),
        ("status", "--json"),
        ("status", "--format", "table"),
        ("queue", "list"),
        ("queue", "pause", "builds"),
    )
    zeros = {state: 0 for state in STATES}
    assert ok_json(queues) == [
        {"name": "builds", "paused": True, "states": {**zeros, "pending": 1}, "total": 1},
        {"name": "default", "paused": False, "states": {**zeros, "pending": 2}, "total": 2},
        {"name": "empty-one", "paused": True, "states": zeros, "total": 0},
    ]
    assert ok_json(status)["paused"] == ["builds", "empty-one"]
    assert "paused queues: builds, empty-one" in ok(status_text)
    assert ok(queues_text).splitlines() == [
        "\t".join(("queue", "paused", "limit", "rate", *STATES)),
        "builds\tyes\t-\t-\t1\t0\t0\t0\t0\t0\t0\t0",
        "default\tno\t-\t-\t2\t0\t0\t0\t0\t0\t0\t0",
        "empty-one\tyes\t-\t-\t0\t0\t0\t0\t0\t0\t0\t0",
    ]
    assert ok(again) == "paused builds\n"  # idempotent
    assert ok(run("queue", "resume", "builds")) == "resumed builds\n"
    queues, status, *bad = run.many(
        ("queue", "list", "--json"),
        ("status", "--json"),
        ("queue", "pause", "bad name"),
        ("queue", "resume", "bad name"),
        ("queue", "pause", "x/y"),
    )
    assert ok_json(queues)[0] == {"name": "builds", "paused": False, "states": {**zeros, "pending": 1}, "total": 1}
    assert ok_json(status)["paused"] == ["empty-one"]
    for proc in bad:
        fails(proc, EXIT_USAGE, "invalid queue name")
    assert "'bad name'" in bad[0].stderr


# --- workers (none running) ---------------------------------------------------------------------


def test_worker_list_and_stop_with_no_workers(run: Cli) -> None:
    ok(run("status", "--json"))  # creates the database before the burst
    listed, listed_all, table, stop, stop_wait, bad_queue = run.many(
        ("worker", "list", "--json"),
        ("worker", "list", "--all", "--json"),
        ("worker", "list"),
        ("worker", "stop"),
        ("worker", "stop", "--wait", "--timeout", "5"),
        ("worker", "start", "--queue", "bad name"),
    )
    assert ok_json(listed) == [] and ok_json(listed_all) == []
    assert ok(table) == "id\thost\tpid\tstate\tqueues\tslots\tcurrent jobs\theartbeat\n"
    assert ok(stop) == "asked 0 worker(s) to stop; running jobs finish first\n"
    assert ok(stop_wait) == "asked 0 worker(s) to stop; running jobs finish first\n"
    fails(bad_queue, EXIT_USAGE, "invalid queue name")


def test_worker_start_refuses_an_empty_queue_list_and_a_log_in_a_missing_folder(run: Cli, tmp_path: Path) -> None:
    """``--queue "$Q"`` with Q unset must not serve every queue (``*`` says that), and a mistyped
    ``--log`` folder is refused rather than made (as a mistyped ``--db`` folder is)."""
    ok(run("status", "--json"))
    missing = tmp_path / "no" / "such" / "w.log"
    empty, blank, commas, log = run.many(
        ("worker", "start", "--queue", "", "--burst"),
        ("worker", "start", "--queue", "  ", "--burst"),
        ("worker", "start", "--queue", ",", "--burst"),
        ("worker", "start", "--detach", "--burst", "--log", str(missing)),
    )
    for proc in (empty, blank, commas):
        fails(proc, EXIT_USAGE, "--queue", "'*'")
        assert "started" not in proc.stdout + proc.stderr
    fails(log, EXIT_USAGE, str(missing.parent))
    assert not (tmp_path / "no").exists()


# --- help ---------------------------------------------------------------------------------------


def command_tree() -> list[tuple[tuple[str, ...], Any]]:
    """Every (path, command) of the Typer app, the root included, depth first."""
    import typer.main

    from queuectl.cli import app

    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found.append((path, command))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def is_group(command: Any) -> bool:
    return bool(getattr(command, "commands", None))


def test_every_command_has_help_and_example() -> None:
    tree = command_tree()
    leaves = {" ".join(path) for path, command in tree if not is_group(command)}
    assert leaves >= {
        "enqueue",
        "list",
        "show",
        "status",
        "cancel",
        "worker start",
        "worker stop",
        "worker list",
        "dlq list",
        "dlq retry",
        "dlq purge",
        "config get",
        "config set",
        "config list",
        "queue list",
        "queue pause",
        "queue resume",
    }
    missing = []
    for path, command in tree:
        name = " ".join(path) or "(root)"
        text = command.help or ""
        if not text.strip():
            missing.append(f"{name}: no help")
        elif not is_group(command) and f"Example: queuectl {name}" not in text:
            missing.append(f"{name}: no 'Example: queuectl {name} ...' in {text!r}")
        elif is_group(command) and path and "Example: queuectl" not in (command.epilog or ""):
            missing.append(f"{name}: a group without an example in its epilog")
    assert missing == []


HELP_SCRIPT = r"""
import contextlib, io, json, sys
from queuectl.cli import main
results = []
for path in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["queuectl", *path, "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def test_help_of_every_command_exits_0(tmp_path: Path) -> None:
    """``queuectl [group] [command] --help`` for every node of the tree.

    The root and the groups run as ``python -m queuectl ... --help``, all at once; the (many) leaf
    commands go through ``queuectl.cli.main`` in one more interpreter, to spare 20-odd starts.
    """
    cli = Cli(tmp_path)
    tree = command_tree()
    groups = [(path, command) for path, command in tree if is_group(command)]
    leaves = [(path, command) for path, command in tree if not is_group(command)]
    in_one = start_cli_python(
        "-c", HELP_SCRIPT, json.dumps([list(path) for path, _ in leaves]), env=cli.env, cwd=tmp_path
    )
    results = cli.many(*((*path, "--help") for path, _ in groups))
    leaf_results = json.loads(ok(finish(in_one)))
    results += [
        subprocess.CompletedProcess(["python", "-m", "queuectl", *path, "--help"], code, out, err)
        for (path, _), (code, out, err) in zip(leaves, leaf_results, strict=True)
    ]
    problems = []
    for (path, command), proc in zip(groups + leaves, results, strict=True):
        words = " ".join(proc.stdout.split())
        checks = [
            proc.returncode == EXIT_OK,
            proc.stderr == "",
            "Usage:" in proc.stdout,
            " ".join(command.help.splitlines()[0].split()) in words,
        ]
        if is_group(command):
            checks += [name in proc.stdout for name in command.commands]
        else:
            checks.append(f"Example: queuectl {' '.join(path)}" in words)
        if not all(checks):
            problems.append(describe(proc))
    assert problems == []
    assert len(results) == len(tree)
    # --help never touches the database
    assert sorted(os.listdir(tmp_path)) == []


# --- where the database is: default, .env, environment, --db ------------------------------------


def test_default_database_is_private_in_the_data_dir(tmp_path: Path) -> None:
    env = clean_env(tmp_path, db=None)
    cli = Cli(tmp_path, env)
    assert ok(cli("enqueue", "echo default", "--id", "d1")) == "d1\n"
    folder = tmp_path / "data" / "queuectl"
    db = folder / "queue.db"
    assert db.is_file()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    config, listed = cli.many(("config", "list", "--json"), ("list", "--json"))
    assert ok_json(config)["database"] == f"sqlite:///{db}"
    assert listed_ids(listed) == ["d1"]
    assert not (tmp_path / "q.db").exists()


def dotenv_warned(proc: subprocess.CompletedProcess, folder: Path) -> subprocess.CompletedProcess:
    """As root, a run whose queue came from ``.env`` names that file in one warning line (issue 11 #3)."""
    if IS_ROOT:
        assert proc.stderr == (
            f"queuectl: warning: QUEUECTL_DB comes from {folder / '.env'}; running as "
            "root, so the jobs of that queue run as root\n"
        ), describe(proc)
        return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, "")
    return proc


def test_database_url_precedence_flag_env_dotenv(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    dotenv_db, env_db, flag_db = tmp_path / "dotenv.db", tmp_path / "env.db", tmp_path / "flag.db"
    (project / ".env").write_text(f"# queuectl settings\nQUEUECTL_DB=sqlite:///{dotenv_db}\n")
    no_env = clean_env(tmp_path, db=None)
    with_env = clean_env(tmp_path, db=f"sqlite:///{env_db}")
    procs = [
        start_cli("enqueue", "true", "--id", "via-dotenv", env=no_env, cwd=project),  # .env is honoured
        start_cli("enqueue", "true", "--id", "via-env", env=with_env, cwd=project),  # env beats .env
        start_cli(
            "--db",
            f"sqlite:///{flag_db}",
            "enqueue",
            "true",
            "--id",
            "via-flag",  # --db beats both
            env=with_env,
            cwd=project,
        ),
    ]
    dotenv_run, env_run, flag_run = (finish(proc) for proc in procs)
    assert [ok(dotenv_warned(dotenv_run, project)), ok(env_run), ok(flag_run)] == [
        "via-dotenv\n",
        "via-env\n",
        "via-flag\n",
    ]
    # each job went to its own file, and the default one was never created
    for path, job_id in ((dotenv_db, "via-dotenv"), (env_db, "via-env"), (flag_db, "via-flag")):
        from queuectl.store.sql.sqlite import SqliteStore

        store = SqliteStore(str(path))
        try:
            assert [job.id for job in store.list_jobs()] == [job_id]
        finally:
            store.close()
    assert not (tmp_path / "data").exists()
    # and config list names the database in use
    first, *others = [
        finish(proc)
        for proc in (
            start_cli("config", "list", "--json", env=no_env, cwd=project),
            start_cli("config", "list", "--json", env=with_env, cwd=project),
            start_cli("--db", f"sqlite:///{flag_db}", "config", "list", "--json", env=with_env, cwd=project),
        )
    ]
    resolved = [ok_json(run)["database"] for run in (dotenv_warned(first, project), *others)]
    assert resolved == [f"sqlite:///{dotenv_db}", f"sqlite:///{env_db}", f"sqlite:///{flag_db}"]
