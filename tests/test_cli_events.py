"""``queuectl events``, ``progress`` and ``logs --attempt`` on bad input: one line on stderr and
the documented exit code, never a traceback; the NDJSON of ``events --json`` parses line by line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


class Cli:
    """``queuectl ARGS`` as a user runs it, on this test's own database."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
        self.env.update(QUEUECTL_DB=f"sqlite:///{tmp_path / 'q.db'}", XDG_DATA_HOME=str(tmp_path))

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queuectl", *args],
            env=self.env,
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )


def test_bad_input_is_one_line_and_an_exit_code(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    job_id = cli("enqueue", "echo hi").stdout.strip()
    for args, code, words in (
        (("events", "--since", "last tuesday"), 2, "sequence number"),
        (("events", "--limit", "99999999999999999999"), 2, "--limit"),  # once a traceback
        (("dlq", "list", "--limit", "99999999999999999999"), 2, "--limit"),
        (("logs", job_id, "--attempt", "1"), 3, "no finished attempt"),
        (("logs", "nope", "--attempt", "1"), 3, "no job"),
        (("logs", job_id, "--attempt", "1", "--follow"), 2, "--follow"),
        (("progress", "lots"), 2, "DONE/TOTAL"),
        (("progress", "nan/100"), 2, "finite"),
    ):
        result = cli(*args)
        assert result.returncode == code, (args, result)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_progress_outside_a_job_does_nothing_and_succeeds(tmp_path: Path) -> None:
    result = Cli(tmp_path)("progress", "40/100", "resizing")
    assert result.returncode == 0 and "not running inside a queuectl job" in result.stderr


def test_events_json_is_one_object_per_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    ids = [cli("enqueue", f"echo {n}", "--queue", "q" if n else "other").stdout.strip() for n in range(3)]
    lines = cli("events", "--json").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(row["kind"], row["job_id"]) for row in rows] == [("enqueued", job_id) for job_id in ids]
    assert [row["seq"] for row in rows] == sorted(row["seq"] for row in rows)
    after_first = cli("events", "--json", "--since", str(rows[0]["seq"]), "--queue", "q").stdout.splitlines()
    assert [json.loads(line)["job_id"] for line in after_first] == ids[1:]
    assert cli("events", "--job", ids[0]).stdout.count("enqueued") == 1


def test_a_since_past_64_bits_is_refused_not_a_traceback(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    cli("enqueue", "echo hi")
    for value in ("99999999999999999999", "9223372036854775808"):
        for follow in ((), ("--follow",)):
            result = cli("events", "--since", value, *follow)
            # observed: OverflowError: Python int too large to convert to SQLite INTEGER
            assert result.returncode == 2, (value, follow, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("queuectl: error: ") and value in lines[0], result.stderr
    assert cli("events", "--since", "9223372036854775807").returncode == 0  # the largest is still a number
