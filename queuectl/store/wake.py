"""Wake idle workers on one host at once, without polling: one Unix datagram socket per worker.

A worker binds ``<wake dir>/<worker id>``; whoever makes work eligible sends one byte to every
socket there. A lost byte costs at most one poll interval, never a job, so every error is ignored.

The folder may sit in a shared place (``$TMPDIR/queuectl-<uid>-<crc>`` for a long database path),
where another user could plant a symlink or a folder of their own at that name. So it is created
0700 and used only when it is a real folder (never through a symlink), ours, and writable by nobody
else; inside it only sockets we own are sent to or unlinked. An unsafe folder is not an error:
it means no waking (workers fall back on polling every ``poll-interval``) and one warning line on
stderr naming the folder, so that a planted folder costs latency, never a file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import stat
import sys
import zlib

_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes
_warned: set[str] = set()


def wake_dir_for(db_path: str) -> str:
    """The folder of wake sockets for one database file (next to it when the path is short)."""
    beside = f"{db_path}.wake"
    if len(beside) + 24 <= _MAX_SOCKET_PATH:
        return beside
    digest = f"{zlib.crc32(db_path.encode()):08x}"  # not hashlib: it loads OpenSSL into every worker
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"queuectl-{os.getuid()}-{digest}")


@functools.lru_cache(maxsize=1)
def _queue_length() -> int:
    """How many datagrams a Unix socket holds unread before senders are refused (Linux's sysctl)."""
    try:
        with open("/proc/sys/net/unix/max_dgram_qlen", "rb") as handle:
            return max(1, int(handle.read()))
    except (OSError, ValueError):
        return 10  # the kernel's default


class UnsafeWakeDir(OSError):
    """The wake folder is a symlink, not a folder, another user's, or writable by others."""


def _warn_once(wake_dir: str, why: str) -> None:
    if wake_dir not in _warned:
        _warned.add(wake_dir)
        print(
            f"queuectl: warning: not using the wake folder {wake_dir} ({why}); workers poll "
            f"instead; remove it if you did not create it",
            file=sys.stderr,
            flush=True,
        )


def open_wake_dir(wake_dir: str, create: bool) -> int:
    """A file descriptor of the folder once it is known to be safe (created 0700 if ``create``).

    Raises :class:`UnsafeWakeDir` (after one warning) for an unsafe folder, another OSError if it
    cannot be made or opened (a missing folder when not ``create``: nobody listens yet).
    """
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(wake_dir, 0o700)
    try:
        fd = os.open(wake_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            _warn_once(wake_dir, "it is a symlink or not a folder")
            raise UnsafeWakeDir(exc.errno, "not a folder") from None
        raise
    info = os.fstat(fd)
    why = None
    if info.st_uid != os.geteuid():
        why = f"it belongs to uid {info.st_uid}"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        why = "other users can write to it"
    if why is not None:
        os.close(fd)
        _warn_once(wake_dir, why)
        raise UnsafeWakeDir(errno.EPERM, why)
    return fd


def _own_socket(dir_fd: int, name: str) -> bool:
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return False
    return stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid()


class SocketWaker:
    """The receiving end: readable when somebody called :func:`notify_all` for this folder."""

    def __init__(self, wake_dir: str, name: str) -> None:
        dir_fd = open_wake_dir(wake_dir, create=True)  # unsafe: OSError, the worker polls instead
        try:
            if os.path.lexists(os.path.join(wake_dir, name)) and _own_socket(dir_fd, name):
                os.unlink(name, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        self.path = os.path.join(wake_dir, name)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(self.path)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> bytes:
        """Empty the socket; returns what was sent (``s`` asks the worker to renew its leases and
        check for a stop now). A queue found full may have refused an ``s`` (Linux queues one
        datagram more than ``net.unix.max_dgram_qlen``, 10 by default, and refuses the next), so
        a full queue reads as one: an extra renewal costs little, a lost stop a whole heartbeat."""
        received = b""
        datagrams = 0
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(64):
                received += chunk
                datagrams += 1
        if datagrams > _queue_length():
            received += b"s"
        return received

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            info = os.lstat(self.path)
            if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid():
                os.unlink(self.path)


def notify_all(wake_dir: str, message: bytes = b"!") -> None:
    """Send one byte to every worker socket in ``wake_dir``; forget sockets nobody listens on."""
    try:
        dir_fd = open_wake_dir(wake_dir, create=False)
    except OSError:
        return
    try:
        names = os.listdir(dir_fd)
        if not names:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for name in names:
                if not _own_socket(dir_fd, name):
                    continue  # not a socket, or not ours: neither sent to nor removed
                try:
                    sock.sendto(message, os.path.join(wake_dir, name))
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dir_fd)  # its worker died without cleaning up
                except OSError:
                    pass  # buffer full: that worker is already awake
    finally:
        os.close(dir_fd)
