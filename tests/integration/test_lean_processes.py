"""The long-lived processes stay lean (issue 18: idle RSS): a worker and a supervisor never load
the CLI's libraries (Typer, Rich, Click) nor what only a job or a hook needs, and a foreground
``worker start`` becomes the lean supervisor instead of running it under Typer.

Checked on real processes: ``python -X importtime`` lists every module a process imports, on
stderr, whenever it is imported (so a late import on the idle path shows too)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from queuectl.runtime.urlpipe import ENV_DB_FD, url_pipe

from .conftest import Queue, wait_until

CLI_ONLY = {"typer", "rich", "click"}
# cut from the idle path: argparse (a hand-parsed command line), tempfile and subprocess (jobs
# start by posix_spawn; a hook imports them when it runs), ctypes for the supervisor only
WORKER_NEVER = CLI_ONLY | {"argparse", "tempfile", "subprocess", "base64"}


def imported(stderr: str) -> set[str]:
    """The top-level packages named in ``-X importtime`` output."""
    return {match.split(".")[0] for match in re.findall(r"^import time:.*\|\s+(\S+)\s*$", stderr, re.M)}


def test_an_idle_worker_imports_no_cli_library_nor_a_job_s(queue: Queue) -> None:
    # Given a queue with nothing to do, and a burst worker that serves it (it goes idle, runs its
    # housekeeping pass, and exits)
    queue.cli("status")
    # When it runs under -X importtime
    ran = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "queuectl.runtime.worker", "--burst"],
        env=queue.env,
        cwd=queue.root,
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Then it exited cleanly, and loaded none of them
    assert ran.returncode == 0, ran.stderr[-2000:]
    modules = imported(ran.stderr)
    assert "sqlite3" in modules  # the check sees what the worker did import
    assert not modules & WORKER_NEVER, modules & WORKER_NEVER


def test_a_supervisor_imports_no_cli_library(queue: Queue) -> None:
    # Given the supervisor as worker start runs it, with the URL on its pipe
    queue.cli("status")
    env = {key: value for key, value in queue.env.items() if key != "QUEUECTL_DB"}
    fd = url_pipe(queue.url)
    env[ENV_DB_FD] = str(fd)
    try:
        ran = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "queuectl.runtime.supervisor", "--count", "1", "--burst"],
            env=env,
            cwd=queue.root,
            capture_output=True,
            text=True,
            timeout=30,
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)
    # Then it ran its worker to the end without loading Typer or Rich (its worker, started
    # without -X importtime, prints none of these lines)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "all workers stopped" in ran.stderr
    modules = imported(ran.stderr)
    assert "subprocess" in modules
    assert not modules & CLI_ONLY, modules & CLI_ONLY


def test_worker_start_in_the_foreground_becomes_the_lean_supervisor(queue: Queue) -> None:
    # Given workers started in the foreground, as from a shell
    proc = queue.start_workers(count=1)
    # Then the process the shell waits for (same pid) is the supervisor module, not the CLI
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"queuectl.runtime.supervisor" in cmdline, cmdline
    assert queue.url.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()  # it came on the pipe
    # And SIGTERM still stops it and its workers gracefully, exit code 0
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    wait_until(lambda: not queue.running_workers(), 10, message="workers stopped")
