"""Every option of every command says what it does in ``--help`` (issue 15), and the help of
``wait`` and ``status`` tells what they really do."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Iterator

from typer.main import get_command

from queuectl.cli import app


def commands(command: Any, path: tuple[str, ...] = ("queuectl",)) -> Iterator[tuple[str, Any]]:
    """Every command and group under ``command``, with its path (typer's own click classes:
    looked at by what they have, not by isinstance)."""
    yield " ".join(path), command
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, (*path, name))


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"{path} {'/'.join(param.opts)}"
        for path, command in commands(get_command(app))
        for param in command.params
        if param.param_type_name == "option" and not param.hidden and not (param.help or "").strip()
    ]
    assert not missing, "options without help text:\n" + "\n".join(missing)
    assert len(list(commands(get_command(app)))) > 30  # the walk reached the groups' commands


def test_every_command_has_a_help_text() -> None:
    bare = [path for path, command in commands(get_command(app)) if not (command.help or "").strip()]
    assert not bare, bare


def help_of(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "queuectl", *args, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # rewrapped for any terminal width


def test_wait_help_names_its_exit_codes_and_how_it_waits() -> None:
    text = help_of("wait")
    for said in ("0 all completed", "20 or 21", "22 --timeout", "3 an unknown id", "--batch B", "--queue Q"):
        assert said in text, said
    assert "a failed job waiting for its retry is not finished" in text


def test_status_help_says_what_it_counts() -> None:
    text = help_of("status")
    for said in ("summed over every queue", "workers are alive", "autoscaling", "paused queues", "--watch"):
        assert said in text, said
