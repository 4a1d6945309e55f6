"""Run a command to its end, keeping when each line of its stdout arrived (for ``logs --follow``,
whose point is that a line shows while the job still runs)."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Mapping


def run_with_line_times(
    cmd: list[str], env: Mapping[str, str], cwd: object, timeout: float
) -> tuple[list[tuple[float, str]], float, int, str]:
    """(stdout lines with their arrival times, the exit time, the exit code, stderr)."""
    proc = subprocess.Popen(
        cmd,
        env=dict(env),
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both are PIPEs
    lines: list[tuple[float, str]] = []
    errors: list[str] = []
    readers = [
        threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in stdout)),
        threading.Thread(target=lambda: errors.extend(stderr)),
    ]
    for reader in readers:
        reader.start()
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    ended = time.monotonic()
    for reader in readers:
        reader.join(5)
    return lines, ended, code, "".join(errors)
