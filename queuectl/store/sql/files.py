"""The SQLite file on disk: created private, refused when other users could have planted or changed it."""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Iterator

from queuectl.core.errors import StoreReadOnly, StoreUnavailable


def open_private_file(path: str) -> None:
    """Create the database file 0600 (and its folder 0700) before SQLite opens it; refuse unsafe modes."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {folder} for the queue: {exc.strerror}") from None
    if not os.path.exists(path):
        with contextlib.suppress(FileExistsError):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except PermissionError:
                raise StoreReadOnly(f"cannot create {path}: permission denied") from None
            except OSError as exc:
                if isinstance(exc, FileExistsError):
                    raise
                raise StoreUnavailable(f"cannot create {path}: {exc.strerror}") from None
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise StoreUnavailable(f"cannot open {path}: {exc.strerror}") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreUnavailable(
            f"refusing {path}: it is writable by other users, who could run commands as you; "
            f"fix it with: chmod 600 {path}"
        )


@contextlib.contextmanager
def exclusive_flock(path: str) -> Iterator[None]:
    """An flock on the database file itself (SQLite's own locks are fcntl locks: no interference)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
