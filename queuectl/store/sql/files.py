"""The SQLite file on disk: created private, refused when other users could have planted or changed it.

Whoever can write the database, or one of the files SQLite reads beside it (``-wal``, ``-shm``,
``-journal``: a crafted WAL frame or hot journal is replayed into the database), chooses the
commands our workers run as us. So before SQLite opens anything we check:

* the folder (of the path given, and of the file it resolves to): ours or root's, and not writable
  by others, unless it is sticky (``/tmp``), where others cannot rename or delete our files;
* the database and each of its side files that exists: a regular file (the side files not even a
  symlink), ours, and not writable by group or others.

What remains: in a sticky shared folder another user may still create a side file in the moment
between SQLite deleting it and creating it again; a private folder (the default) has no such gap.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from typing import Iterator

from queuectl.core.errors import StoreReadOnly, StoreUnavailable

SIDE_FILES = ("-wal", "-shm", "-journal")
_TRUSTED_OWNERS = (0,)  # besides ourselves: root owns /, /tmp, /var...


def open_private_file(path: str) -> None:
    """Create the database file 0600 (and its folder 0700) before SQLite opens it; refuse unsafe ones."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {folder} for the queue: {exc.strerror}") from None
    check_folder(folder)
    if not os.path.lexists(path):
        with contextlib.suppress(FileExistsError):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
            except PermissionError:
                raise StoreReadOnly(f"cannot create {path}: permission denied") from None
            except OSError as exc:
                if isinstance(exc, FileExistsError):
                    raise
                raise StoreUnavailable(f"cannot create {path}: {exc.strerror}") from None
    _check_link(path)
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(folder):
        check_folder(os.path.dirname(real))
    _check_file(path, follow=True)
    for base in dict.fromkeys((path, real)):  # SQLite puts its side files beside the resolved path
        for suffix in SIDE_FILES:
            if os.path.lexists(base + suffix):
                _check_file(base + suffix, follow=False)


def check_folder(folder: str) -> None:
    """Refuse a folder where another user could replace the queue's files."""
    try:
        info = os.stat(folder)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open {folder} for the queue: {exc.strerror}") from None
    if info.st_uid != os.geteuid() and info.st_uid not in _TRUSTED_OWNERS:
        raise StoreUnavailable(
            f"refusing the queue in {folder}: the folder belongs to another user (uid {info.st_uid}), "
            "who could replace its files; keep the queue in a folder of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise StoreUnavailable(
            f"refusing the queue in {folder}: other users can write to this folder and replace its "
            f"files; fix it with: chmod go-w {folder} (or keep the queue in a private folder)"
        )


def _check_link(path: str) -> None:
    """A symlink at the database path must be ours (in a sticky folder another user could plant one)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open {path}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode) and info.st_uid != os.geteuid() and info.st_uid not in _TRUSTED_OWNERS:
        raise StoreUnavailable(
            f"refusing {path}: it is a symlink another user (uid {info.st_uid}) made; remove it "
            f"(rm {path}) or point the database URL at the real file"
        )


def _check_file(path: str, follow: bool) -> None:
    """The database (``follow``: through a symlink) or a side file: a regular file, ours, not writable by others."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not follow:
            return  # a side file the last connection to close removed meanwhile: nothing to check
        raise StoreUnavailable(f"cannot open {path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode) and follow:
        raise StoreUnavailable(
            f"{path} is a folder, not a database file: name a file in it, "
            f"e.g. sqlite:///{os.path.join(path, 'queue.db')}"
        )
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise StoreUnavailable(
            f"refusing {path}: it is {kind}, so it may not be SQLite's own; remove it if no queue "
            f"is using it (rm {path})"
        )
    if info.st_uid != os.geteuid():
        raise StoreUnavailable(
            f"refusing {path}: it belongs to another user (uid {info.st_uid}), who could change the "
            f"jobs you run; remove it if you did not create it (rm {path}), or chown it to yourself"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreUnavailable(
            f"refusing {path}: it is writable by other users, who could run commands as you; "
            f"fix it with: chmod 600 {path}"
        )


# Descriptors of database files this process opened for an flock, by resolved path, with how many
# of our stores have that file open. POSIX drops *every* fcntl lock a process holds on a file when
# any of its descriptors of that file is closed, and SQLite's locks are fcntl locks: closing ours
# while a connection is open would drop the connection's shared lock, and the next process to
# close would take itself for the last one and delete the -wal and -shm under that connection.
# So a descriptor is closed only when the last of our stores on the file has closed.
_HELD: dict[str, list[int]] = {}  # path -> [stores open, descriptor or -1]
_HELD_LOCK = threading.Lock()
# an flock belongs to the open file description, which our threads now share: they take turns here
_FLOCK_TURNS: dict[str, threading.Lock] = {}


def hold_file(path: str) -> None:
    """A store opens ``path``: until :func:`release_file`, no descriptor of ours on it is closed."""
    with _HELD_LOCK:
        _HELD.setdefault(os.path.realpath(path), [0, -1])[0] += 1


def release_file(path: str) -> None:
    """A store on ``path`` closed (its connection first); the last one closes our descriptor."""
    key = os.path.realpath(path)
    with _HELD_LOCK:
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            del _HELD[key]
            if entry[1] >= 0:
                os.close(entry[1])


@contextlib.contextmanager
def exclusive_flock(path: str) -> Iterator[None]:
    """An flock on the database file itself (SQLite's own locks are fcntl locks: no interference),
    on a descriptor kept open while any store of ours has the file (see :data:`_HELD`)."""
    import fcntl

    key = os.path.realpath(path)
    with _HELD_LOCK:
        entry = _HELD.setdefault(key, [0, -1])
        if entry[1] < 0:
            entry[1] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        fd = entry[1]
        turn = _FLOCK_TURNS.setdefault(key, threading.Lock())
    with turn:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
