"""Full output (issue 15): ``config set output-limit``, ``logs --head/--tail``, ``show``'s last 20 lines.

Real CLI runs as subprocesses and real burst workers on a SQLite file (helpers from ``test_cli``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_cli import Cli, describe, fails, ok

from queuectl.core.config import RuntimeConfig, output_limit_for
from queuectl.core.defaults import MONGO_OUTPUT_BUDGET
from queuectl.core.errors import EXIT_OK, EXIT_USAGE
from queuectl.service.logtail import split_marker


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def burst(run: Cli) -> None:
    proc = run("worker", "start", "--burst")
    assert proc.returncode == EXIT_OK, describe(proc)


def test_output_limit_is_validated_with_one_line_and_exit_2(run: Cli) -> None:
    for bad in ("17MiB", "0", "512", "lots", "4GiB", "1e400"):
        fails(run("config", "set", "output-limit", bad), EXIT_USAGE, "output-limit")
    assert ok(run("config", "set", "output-limit", "4MiB")) == "output-limit = 4194304\n"
    assert ok(run("config", "set", "output-limit", "16MiB")) == "output-limit = 16777216\n"
    assert ok(run("config", "set", "output-limit", "2048")) == "output-limit = 2048\n"


def test_a_larger_limit_keeps_more_output_and_history_follows_it(run: Cli) -> None:
    """1 MiB of output: the default keeps its last 64 KiB (and says how much it dropped); with
    output-limit 2MiB every byte is kept, in the job and in its attempt's history row."""
    line = "x" * 1023 + "\n"
    command = f"yes {'x' * 1023} | head -c {1 << 20}"
    ok(run("enqueue", command, "--id", "small"))
    burst(run)
    ok(run("config", "set", "output-limit", "2MiB"))
    ok(run("enqueue", command, "--id", "big"))
    burst(run)
    dropped, kept = split_marker(ok(run("logs", "small")))
    assert (dropped, len(kept)) == ((1 << 20) - 65536, 65536)
    whole = ok(run("logs", "big"))
    assert whole == line * 1024
    assert ok(run("logs", "big", "--attempt", "1")) == whole


def test_logs_head_and_tail_take_lines_also_of_an_attempt(run: Cli) -> None:
    ok(run("enqueue", "seq 1 100; exit 3", "--id", "j", "--max-retries", "1", "--backoff-base", "1"))
    burst(run)
    assert ok(run("logs", "j", "--tail", "3")) == "98\n99\n100\n"
    assert ok(run("logs", "j", "-n", "1")) == "100\n"
    assert ok(run("logs", "j", "--head", "2")) == "1\n2\n"
    assert ok(run("logs", "j", "--attempt", "1", "--head", "1")) == "1\n"
    assert ok(run("logs", "j", "--attempt", "2", "--tail", "2")) == "99\n100\n"
    assert ok(run("logs", "j", "--tail", "0")) == ""
    fails(run("logs", "j", "--head", "1", "--tail", "1"), EXIT_USAGE, "not both")
    fails(run("logs", "j", "--head", "1", "--follow"), EXIT_USAGE, "--follow")
    fails(run("logs", "j", "--attempt", "1", "--json", "--tail", "1"), EXIT_USAGE, "--json")


def test_logs_head_of_a_cut_output_says_what_was_dropped(run: Cli) -> None:
    ok(run("config", "set", "output-limit", "1KiB"))
    ok(run("enqueue", "seq 1 1000", "--id", "j"))
    burst(run)
    proc = run("logs", "j", "--head", "2")
    assert proc.returncode == EXIT_OK, describe(proc)
    assert len(proc.stdout.splitlines()) == 2
    assert "earlier bytes were dropped (config output-limit)" in proc.stderr
    assert ok(run("logs", "j", "--tail", "1")) == "1000\n"


def test_show_prints_the_last_20_lines_and_says_how_to_see_the_rest(run: Cli) -> None:
    ok(run("enqueue", "seq 1 50", "--id", "long"))
    ok(run("enqueue", "seq 1 5", "--id", "short"))
    burst(run)
    long_view, short_view = (ok(p) for p in run.many(("show", "long"), ("show", "short")))
    body = long_view.split("output (", 1)[1]
    assert "last 20 lines; all of it: queuectl logs long" in body.splitlines()[0]
    shown = body.split("\n", 1)[1].split("attempts", 1)[0].split()
    assert shown == [str(n) for n in range(31, 51)]
    assert "\n1\n2\n3\n4\n5\n" in short_view and "queuectl logs" in short_view


def test_on_mongodb_the_kept_outputs_share_the_document_budget() -> None:
    """A MongoDB job document holds its output and each kept attempt's: together they stay
    under 14 MiB (the document limit is 16 MiB), whatever output-limit asks."""
    config = RuntimeConfig(output_limit=16 << 20, attempt_outputs_kept=10)
    assert output_limit_for(config, None) == 16 << 20
    assert output_limit_for(config, MONGO_OUTPUT_BUDGET) * 11 <= MONGO_OUTPUT_BUDGET
    few = RuntimeConfig(output_limit=16 << 20, attempt_outputs_kept=0)
    assert output_limit_for(few, MONGO_OUTPUT_BUDGET) == MONGO_OUTPUT_BUDGET
    small = RuntimeConfig(output_limit=65536)
    assert output_limit_for(small, MONGO_OUTPUT_BUDGET) == 65536


def test_the_executor_keeps_the_exact_tail_with_a_large_limit() -> None:
    """Trimming is amortised (the buffer may hold up to twice the limit): the text handed on is
    still exactly the last ``limit`` bytes and the marker counts the rest."""
    from queuectl.runtime.executor import Run

    total, limit = 5_000_000, 1_000_000
    run = Run(f"head -c {total} /dev/zero | tr '\\0' a; echo end", None, {"PATH": "/usr/bin:/bin"}, limit=limit)
    while not run.eof:
        import select

        select.select([run.fileno()], [], [], 1)
        run.read()
    while run.poll() is None:
        subprocess.run(["true"])
    run.finish()
    dropped, kept = split_marker(run.output() or "")
    assert len(kept) == limit and kept.endswith("aend\n")
    assert dropped == total + 4 - limit
