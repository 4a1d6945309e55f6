"""The C library calls queuectl makes through ctypes: ``prctl`` and ``malloc_trim`` (Linux and
glibc; elsewhere they answer False and do nothing). ctypes is imported on the first call, not
with this module."""

from __future__ import annotations

import contextlib

PR_SET_PDEATHSIG = 1  # a signal for this process when its parent dies (kept across an exec)
PR_SET_CHILD_SUBREAPER = 36  # orphaned descendants are re-parented to this process, not to init


def prctl(option: int, value: int) -> bool:
    """``prctl(option, value, 0, 0, 0)``; True if it succeeded."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def malloc_trim() -> None:
    """``malloc_trim(0)``: hand the heap's free pages back to the system."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
