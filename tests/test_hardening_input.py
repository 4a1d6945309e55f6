"""Issue 11 #12-#14: hostile bytes on the command line and in ``enqueue --file`` are one-line
errors (exit 2) with nothing enqueued, never a traceback or an unbounded read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from queuectl.core.defaults import MAX_LINE_BYTES

EXIT_USAGE = 2


def run(
    tmp_path: Path, *args: str | bytes, stdin: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_DB"] = f"sqlite:///{tmp_path / 'q.db'}"
    return subprocess.run(
        [sys.executable, "-m", "queuectl", *args],
        env=env,
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def jobs_in(tmp_path: Path) -> bytes:
    return run(tmp_path, "list", "--json").stdout


def refused(result: subprocess.CompletedProcess[bytes], *words: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == EXIT_USAGE, err
    assert err.startswith("queuectl: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


BAD = b"caf\xe9"  # Latin-1, not UTF-8


@pytest.mark.parametrize(
    "args",
    [
        (b"enqueue", b"echo " + BAD),
        (b"enqueue", b"true", b"--cwd", b"/tmp/" + BAD),
        (b"enqueue", b"true", b"--env", b"K=" + BAD),
        (b"enqueue", b"true", b"--unique-key", BAD),
        (b"enqueue", b"true", b"--on-finish", b"echo " + BAD),
        (b"show", BAD),
        (b"cancel", BAD),
        (b"logs", BAD),
        (b"wait", BAD),
        (b"dlq", b"retry", BAD),
        (b"list", b"--queue", BAD),
        (b"schedule", b"add", b"s", b"* * * * *", b"echo " + BAD),
    ],
    ids=lambda args: b" ".join(args[:2]).decode(errors="replace"),
)
def test_arguments_that_are_not_utf8_are_refused(tmp_path: Path, args: tuple[bytes, ...]) -> None:
    refused(run(tmp_path, *args), "not valid UTF-8")
    assert jobs_in(tmp_path).strip() == b"[]"


def test_a_deeply_nested_or_huge_number_json_line_is_refused(tmp_path: Path) -> None:
    deep = b'{"command": "true", "env": ' + b"[" * 40000 + b"]" * 40000 + b"}\n"
    refused(run(tmp_path, "enqueue", "--file", "-", stdin=deep), "line 1")
    digits = b'{"command": "true", "priority": ' + b"9" * 5000 + b"}\n"
    refused(run(tmp_path, "enqueue", "--file", "-", stdin=digits), "line 1")
    assert jobs_in(tmp_path).strip() == b"[]"


def test_run_at_beyond_ten_years_is_refused_like_a_long_delay(tmp_path: Path) -> None:
    refused(run(tmp_path, "enqueue", "true", "--run-at", "9999-12-31T23:59:59-23:59"), "run_at", "out of range")


def test_names_with_a_trailing_newline_and_an_empty_queue_are_refused(tmp_path: Path) -> None:
    refused(run(tmp_path, "enqueue", "true", "--id", "job\n"), "invalid job id")
    refused(run(tmp_path, "enqueue", "true", "--queue", "builds\n"), "invalid queue name")
    refused(run(tmp_path, "enqueue", "true", "--queue", ""), "invalid queue name")
    refused(run(tmp_path, "schedule", "add", "tick\n", "* * * * *", "true"), "invalid schedule name")
    assert jobs_in(tmp_path).strip() == b"[]"


def test_a_bom_and_a_json_array_line_are_not_shell_commands(tmp_path: Path) -> None:
    bom = "\ufeff".encode() + b'{"command": "echo from-json", "id": "j1"}\n'
    assert run(tmp_path, "enqueue", "--file", "-", stdin=bom).returncode == 0
    shown = run(tmp_path, "show", "j1", "--json").stdout.decode()
    assert '"command": "echo from-json"' in shown
    refused(run(tmp_path, "enqueue", "--file", "-", stdin=b'["echo", "hi"]\n'), "line 1", "object")
    # a shell test is still a command
    assert run(tmp_path, "enqueue", "--file", "-", stdin=b"[ -d / ] && echo yes\n").returncode == 0


def test_a_line_past_the_limit_is_refused_as_it_streams_in(tmp_path: Path) -> None:
    # /dev/zero has no newline: refused after about one line's worth, not spooled without end
    result = run(tmp_path, "enqueue", "--file", "/dev/zero", timeout=20)
    refused(result, "KiB")
    long_file = tmp_path / "long.txt"
    long_file.write_bytes(b"echo short\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    refused(run(tmp_path, "enqueue", "--file", str(long_file)), "line 2", "KiB")
    assert jobs_in(tmp_path).strip() == b"[]"
