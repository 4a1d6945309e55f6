"""Orphans a job leaves behind: a worker is their child subreaper, and kills them once their job ended.

A job's ``setsid`` children leave its process group, so the group kill that ends a job misses
them. A worker process calls :func:`adopt_orphans` and becomes a child subreaper, so such an
orphan is re-parented to it once its parent in the job exits; :func:`sweep_orphans` (when a job
ends, and at most once a second while jobs run: :func:`sweep_if_due`) kills every orphan that
cannot belong to a job still running, and reaps it. A run says when its shell starts and ends
(:func:`shell_started`, :func:`shell_ended`), so that its shell is never taken for an orphan.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Callable

from queuectl.runtime.libc import PR_SET_CHILD_SUBREAPER, prctl

_SWEEP_EVERY_S = 1.0
_live_shells: set[int] = set()  # pids of the job shells this process started and has not finished
_next_sweep = 0.0
_adopting = False  # set by adopt_orphans(): only then is a child we did not start an orphan
_spare_all: Callable[[], bool] = bool  # bool() is False: until set, orphans are swept (spare_orphans_while)


def adopt_orphans() -> bool:
    """Make this process a child subreaper and sweep orphans from now on (Linux; else False).

    For the worker's own process only: in any other (a test runner running a worker in-process,
    say) the children it did not start as job shells are its own, and must not be killed.
    """
    global _adopting
    _adopting = prctl(PR_SET_CHILD_SUBREAPER, 1)
    return _adopting


def spare_orphans_while(busy: Callable[[], bool]) -> None:
    """Kill no orphan while ``busy()`` holds: an on-finish hook runs in a thread of this process,
    and what it leaves running in the background is re-parented to us like a job's orphan, with
    nothing to tell the two apart. A hook's leftovers are swept once the hook is done."""
    global _spare_all
    _spare_all = busy


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """State, process group, session and start time (clock ticks) of ``pid``; None once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None  # gone; any other failure (out of descriptors) raises: the sweep then spares all
    return fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19])


def _orphans() -> list[int]:
    """Children of this process that it did not start as a job shell: descendants re-parented to it.

    Read from the main thread's ``children`` list, not by ppid: the on-finish hooks are started by
    the housekeeper's thread, so they are that thread's children and never taken for orphans.
    Without that file (an old kernel) nothing is reported: no hook is ever mistaken for one.
    """
    me = os.getpid()
    try:  # os.open, not open(): read after every job, and a file object costs several syscalls more
        fd = os.open(f"/proc/{me}/task/{me}/children", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = chunk = os.read(fd, 65536)
            while chunk:  # a long list may come in parts
                chunk = os.read(fd, 65536)
                data += chunk
        finally:
            os.close(fd)
        pids = [int(word) for word in data.split()]
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if pid not in _live_shells]


def sweep_orphans(wait_s: float = 0.05) -> int:
    """Kill and reap the orphans that belong to no job still running; returns how many were killed.

    An orphan is spared while it may be a running job's: its session is that job's (the job leads
    its own session), or it started no earlier than the oldest running job's shell (a ``setsid``
    child has a session of its own, but never starts before its job). Anything else outlived the
    job that started it. A killed orphan's own children are re-parented to us in turn: a few rounds.
    """
    global _next_sweep
    _next_sweep = time.monotonic() + _SWEEP_EVERY_S
    killed = 0
    if not _adopting or _spare_all():
        return killed
    try:
        return _sweep(wait_s)
    except OSError:
        return killed  # /proc could not be read (out of descriptors?): kill nothing we cannot place


def _sweep(wait_s: float) -> int:
    killed = 0
    my_group = os.getpgrp()
    for _ in range(3):
        orphans = _orphans()
        if not orphans:
            break
        live = [info for info in map(_stat, _live_shells) if info is not None]
        live_sessions = {info[2] for info in live}
        oldest_live = min((info[3] for info in live), default=None)
        doomed = []
        for pid in orphans:
            info = _stat(pid)
            if info is None:
                continue
            state, pgid, sid, started = info
            if state not in ("Z", "X"):
                if sid in live_sessions or (oldest_live is not None and started >= oldest_live):
                    continue
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pgid == pid and pgid != my_group:
                        os.killpg(pgid, signal.SIGKILL)  # it leads a group: its children too
                    else:
                        os.kill(pid, signal.SIGKILL)
                killed += 1
            doomed.append(pid)
        deadline = time.monotonic() + wait_s
        while doomed:
            doomed = [pid for pid in doomed if not _reaped(pid)]
            if not doomed or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        if doomed:
            break  # still dying (or spared): the next sweep reaps them
    return killed


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def shell_started(pid: int) -> None:
    """A job shell this process started: its own child, never an orphan, and its session and
    start time place the orphans that may still be its job's."""
    _live_shells.add(pid)


def shell_ended(pid: int) -> None:
    """The job shell ended and its group was killed: sweep what it left outside the group."""
    _live_shells.discard(pid)
    sweep_orphans()


def sweep_if_due() -> None:
    """A sweep at most once a second while jobs run (a job's orphan may outlive it unseen)."""
    if time.monotonic() >= _next_sweep:
        sweep_orphans(wait_s=0.0)
