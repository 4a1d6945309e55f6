"""Docs that cannot rot: every command of the CLI is shown, with an example, in the README."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from queuectl.cli import app
from queuectl.core.config import CONFIG_KEYS
from queuectl.core.errors import EXIT_JOB_CANCELLED, EXIT_JOB_DEAD, EXIT_WAIT_TIMEOUT

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def command_paths() -> list[str]:
    paths: list[str] = []

    def walk(command: object, prefix: tuple[str, ...]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, (*prefix, name))
        else:
            paths.append(" ".join(prefix))

    walk(typer.main.get_command(app), ())
    return paths


def test_the_cli_has_the_commands_we_document() -> None:
    assert {"enqueue", "worker start", "dlq retry", "schedule add", "dashboard"} <= set(command_paths())


def test_every_command_has_an_example_in_the_readme() -> None:
    missing = [path for path in command_paths() if not re.search(rf"\$ queuectl {re.escape(path)}\b", README)]
    assert not missing, f"commands without an example in README.md: {missing}"


def test_every_config_key_is_documented() -> None:
    missing = [key for key in CONFIG_KEYS if f"`{key}`" not in README]
    assert not missing, f"config keys missing from the README table: {missing}"


def test_wait_exit_codes_are_documented() -> None:
    # in the exit-code table, not just anywhere ("20" also stands in "20,000")
    codes = ", ".join(str(code) for code in (EXIT_JOB_DEAD, EXIT_JOB_CANCELLED, EXIT_WAIT_TIMEOUT))
    assert re.search(rf"^\| {re.escape(codes)} \| `wait`", README, re.MULTILINE), codes


def test_readme_names_the_test_command_that_ci_runs() -> None:
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "python -m pytest" in README and "python -m pytest" in ci


def test_ci_runs_the_checks_of_scripts_check_sh() -> None:
    root = Path(__file__).resolve().parent.parent
    ci = (root / ".ci" / "run").read_text()
    check = (root / "scripts" / "check.sh").read_text()
    assert "scripts/check.sh" in ci
    for step in ("ruff check", "ruff format --check", "mypy queuectl tests", "python -m pytest"):
        assert step in check, step
