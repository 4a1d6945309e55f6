"""One log line on stderr that never fails: a closed terminal must not kill a worker.

When the terminal that runs ``worker start`` is closed, every later write to it fails with EIO
(and a pipe whose reader went away with EPIPE). A log line is not worth a crash: a supervisor or
worker that died of its own ``print`` would leave its jobs running with nobody to stop or record
them. So the first failed write points stdout and stderr at /dev/null (for us and for anything we
start later) and the process carries on with its graceful stop.
"""

from __future__ import annotations

import contextlib
import os
import sys

_silenced = False


def write_line(text: str) -> None:
    """Print ``text`` on stderr; once stderr has failed, say nothing from then on."""
    if _silenced:
        return
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # EIO: the terminal is gone; EPIPE; ValueError: stderr closed
        silence()


def silence() -> None:
    """Point fds 1 and 2 at /dev/null, so no later write (ours or a library's) can fail."""
    global _silenced
    _silenced = True
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
        os.close(null)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # what was buffered for the dead terminal now goes to /dev/null
