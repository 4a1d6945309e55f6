"""Wake idle workers on one host at once, without polling: one Unix datagram socket per worker.

A worker binds ``<wake dir>/<worker id>``; whoever makes work eligible sends one byte to every
socket there. A lost byte costs at most one poll interval, never a job, so every error is ignored.
"""

from __future__ import annotations

import contextlib
import os
import socket
import zlib

_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes


def wake_dir_for(db_path: str) -> str:
    """The folder of wake sockets for one database file (next to it when the path is short)."""
    beside = f"{db_path}.wake"
    if len(beside) + 24 <= _MAX_SOCKET_PATH:
        return beside
    digest = f"{zlib.crc32(db_path.encode()):08x}"  # not hashlib: it loads OpenSSL into every worker
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"queuectl-{os.getuid()}-{digest}")


class SocketWaker:
    """The receiving end: readable when somebody called :func:`notify_all` for this folder."""

    def __init__(self, wake_dir: str, name: str) -> None:
        os.makedirs(wake_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(wake_dir, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> bytes:
        """Empty the socket; returns what was sent (``s`` asks the worker to check for a stop)."""
        received = b""
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(64):
                received += chunk
        return received

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def notify_all(wake_dir: str, message: bytes = b"!") -> None:
    """Send one byte to every worker socket in ``wake_dir``; forget sockets nobody listens on."""
    try:
        names = os.listdir(wake_dir)
    except OSError:
        return
    if not names:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            path = os.path.join(wake_dir, name)
            try:
                sock.sendto(message, path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # its worker died without cleaning up
            except OSError:
                pass  # buffer full: that worker is already awake
