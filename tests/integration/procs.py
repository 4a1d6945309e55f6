"""Finding and ending the processes a test or a stress run left behind, through /proc.

Jobs run in sessions of their own, so killing a supervisor's process group does not reach them:
they are found by a marker (``KEY=value``) in their environment instead.
"""

from __future__ import annotations

import os
import signal
import time


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has finished running)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def processes_with_env(marker: str) -> list[int]:
    """Live pids whose environment holds ``marker`` (``KEY=value``), this process excluded."""
    found = []
    needle = marker.encode() + b"\0"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read() + b"\0"
        except OSError:
            continue
        if (b"\0" + needle in b"\0" + environ) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def kill_marked(marker: str, rounds: int = 3) -> None:
    """SIGKILL every process carrying ``marker``, a few rounds (a dying parent may fork once more)."""
    for _ in range(rounds):
        pids = processes_with_env(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.1)
