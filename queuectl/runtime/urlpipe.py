"""The database URL handed from a parent to a child process on a pipe, never in its environment
(any job could read an environment from /proc). Its own module: a worker reads the URL, and
importing the supervisor for that loaded subprocess and ctypes into every idle worker."""

from __future__ import annotations

import contextlib
import os

ENV_DB_FD = "QUEUECTL_DB_FD"


def url_pipe(url: str) -> int:
    """A pipe's reading end that holds ``url`` and then end of file (the writing end is closed).

    The URL is far smaller than a pipe's buffer, so writing it all before the reader starts
    cannot block. The caller passes the fd to one child and closes its own copy.
    """
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, url.encode())
    finally:
        os.close(write_fd)
    return read_fd


def read_url_fd() -> str | None:
    """The URL sent by :func:`url_pipe`, if ``QUEUECTL_DB_FD`` names one; the fd is closed after.

    The variable is dropped from our environment, so nothing we start sees a stale fd number.
    """
    text = os.environ.pop(ENV_DB_FD, None)
    if text is None or not text.isdigit():
        return None
    fd = int(text)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return b"".join(chunks).decode() or None
