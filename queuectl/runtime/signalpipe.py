"""Signals as bytes on a pipe, so a select() loop handles them like any other event."""

from __future__ import annotations

import os
import signal

HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1)  # USR1: retire (autoscaling)


def open_signal_pipe() -> int:
    """From now on each of ``HANDLED`` writes its number to a pipe; returns the reading end.

    The handlers do nothing themselves (the loop reads the pipe), and they are handlers, not
    SIG_IGN: an ignored signal would stay ignored in every program started from this process.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in HANDLED:
        signal.signal(signum, lambda *_: None)
    return read_fd


def read_signals(read_fd: int) -> bytes:
    """The signal numbers delivered since the last call (empty if none)."""
    try:
        return os.read(read_fd, 512)
    except BlockingIOError:
        return b""
