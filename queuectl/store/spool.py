"""A running job's output, live, for ``logs --follow`` on the worker's own host: a spool file.

The database gets a job's output only at each heartbeat (a write per heartbeat per job is what
the queue can afford). So the worker also tees what a job writes into a private file, and a
follower on the same host tails that file: it sees output within a read interval (0.1 s), and
the database is written no more often than before. The file goes away when the attempt ends;
where there is none (the job runs on another host, or as another user), ``logs --follow`` reads
the stored output at heartbeat granularity instead.

Layout: one folder per queue, ``<database file>.spool`` beside a SQLite file, else
``$TMPDIR/queuectl-<uid>-spool-<crc of the URL>``, created 0700 and used only when it is a real
folder of ours that nobody else can write (never through a symlink: the rule of the wake folder,
:mod:`queuectl.store.wake`). Inside it, ``<job id>@<attempt>.<generation>``, 0600, created
exclusively (with the job's first output: a silent job costs no file) and never followed
through a symlink. Job ids cannot hold ``@``, so no two jobs'
names overlap. A file is capped at :data:`GENERATION_BYTES`: the writer then starts the next
generation and unlinks the full one, so a job writing gigabytes never fills the disk; a follower
that holds the old file open reads it to its end, then opens the next. A writer holds a lock on
its file, so the files of a killed worker are told apart and swept when a worker starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import zlib

GENERATION_BYTES = 8 * 1024 * 1024  # one spool file holds this much at most before the next starts
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


def spool_dir_for(db_url: str) -> str:
    """The folder of spool files for one queue (beside a SQLite file; in $TMPDIR for a server)."""
    from queuectl.store import redact_url

    if db_url.startswith("sqlite:///"):
        path = os.path.abspath(os.path.expanduser(db_url[len("sqlite:///") :]))
        return f"{path}.spool"
    digest = f"{zlib.crc32(redact_url(db_url).encode()):08x}"  # not hashlib: it loads OpenSSL
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"queuectl-{os.getuid()}-spool-{digest}")


def open_spool_dir(folder: str, create: bool) -> int | None:
    """A descriptor of the folder if it is safe to use (a real folder, ours, writable by us only),
    created 0700 if ``create``; None otherwise (no live output then, never an error)."""
    if create:
        with contextlib.suppress(OSError):
            os.mkdir(folder, 0o700)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS)
    except OSError:
        return None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        return None
    return fd


def sweep_stale(dir_fd: int) -> int:
    """Unlink the spool files no live worker writes (theirs was killed): a writer holds a lock on
    its file for as long as it writes it, so a file whose lock we get is stale. Returns how many."""
    swept = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(dir_fd):
            with contextlib.suppress(OSError):
                fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS, dir_fd=dir_fd)
                try:
                    info = os.fstat(fd)
                    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                        continue
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # being written
                    if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino == info.st_ino:
                        os.unlink(name, dir_fd=dir_fd)
                        swept += 1
                finally:
                    os.close(fd)
    return swept


def _name(job_id: str, attempt: int, generation: int) -> str:
    return f"{job_id}@{attempt}.{generation}"


class SpoolWriter:
    """The worker's side: :meth:`write` each chunk the job wrote, :meth:`close` when it ended.

    Any failure (a full disk) closes the spool for good: followers then read the database.
    """

    def __init__(self, dir_fd: int, job_id: str, attempt: int) -> None:
        self._dir = dir_fd
        self._job, self._attempt = job_id, attempt
        self._generation = 0
        self._size = 0
        self._fd: int | None = None
        self._started = False  # the file is made with the first output: a silent job costs nothing

    def _create(self, generation: int) -> int:
        name = _name(self._job, self._attempt, generation)
        for _ in range(2):
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600, dir_fd=self._dir)
            except FileExistsError:  # left by a worker that was killed: it is not being written
                os.unlink(name, dir_fd=self._dir)
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while written: see sweep_stale
            return fd
        raise OSError(errno.EEXIST, name)

    def write(self, chunk: bytes) -> None:
        if not self._started:
            self._started = True
            try:
                self._fd = self._create(0)
            except OSError:
                self._fd = None
        if self._fd is None:
            return
        try:
            if self._size + len(chunk) > GENERATION_BYTES:
                self._next_generation()
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]
            self._size += len(chunk)
        except OSError:
            self.close()

    def _next_generation(self) -> None:
        """Start the next file before the full one goes: a follower at its end finds the next."""
        assert self._fd is not None
        new = self._create(self._generation + 1)
        os.close(self._fd)
        os.unlink(_name(self._job, self._attempt, self._generation), dir_fd=self._dir)
        self._fd, self._generation, self._size = new, self._generation + 1, 0

    def close(self) -> None:
        """The attempt ended (or the spool failed): the file goes, followers see it unlinked."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.unlink(_name(self._job, self._attempt, self._generation), dir_fd=self._dir)
        self._fd = None


class SpoolReader:
    """The follower's side: :meth:`read` returns what was written since the last call.

    :meth:`ended` is True once the writer closed the attempt's spool (its file is unlinked and
    no next generation exists) and everything was read. ``skipped``: the follower came late and
    earlier generations were already gone.
    """

    def __init__(self, dir_fd: int, job_id: str, attempt: int, fd: int, generation: int) -> None:
        self._dir, self._job, self._attempt = dir_fd, job_id, attempt
        self._fd: int | None = fd
        self._generation = generation
        self.skipped = generation > 0

    @classmethod
    def open(cls, folder: str, job_id: str, attempt: int) -> SpoolReader | None:
        """The spool of that attempt if this host has one we may read, else None."""
        dir_fd = open_spool_dir(folder, create=False)
        if dir_fd is None:
            return None
        prefix = f"{job_id}@{attempt}."
        try:
            generations = sorted(
                int(name[len(prefix) :])
                for name in os.listdir(dir_fd)
                if name.startswith(prefix) and name[len(prefix) :].isdigit()
            )
        except OSError:
            generations = []
        for generation in reversed(generations):
            fd = cls._open_file(dir_fd, _name(job_id, attempt, generation))
            if fd is not None:
                return cls(dir_fd, job_id, attempt, fd, generation)
        os.close(dir_fd)
        return None

    @staticmethod
    def _open_file(dir_fd: int, name: str) -> int | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            return None
        return fd

    def read(self, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` new bytes (moving on to the next generation at the end of one)."""
        parts: list[bytes] = []
        size = 0
        while self._fd is not None and size < limit:
            chunk = os.read(self._fd, min(65536, limit - size))
            if chunk:
                parts.append(chunk)
                size += len(chunk)
                continue
            following = self._open_file(self._dir, _name(self._job, self._attempt, self._generation + 1))
            if following is None:
                break
            # the writer creates the next file before it stops writing this one: read it all first
            while chunk := os.read(self._fd, 65536):
                parts.append(chunk)
                size += len(chunk)
            os.close(self._fd)
            self._fd, self._generation = following, self._generation + 1
        return b"".join(parts)

    def ended(self) -> bool:
        """The writer closed the spool and nothing is left to read in it."""
        if self._fd is None:
            return True
        info = os.fstat(self._fd)
        if info.st_nlink > 0 or self._next_exists():
            return False
        return os.lseek(self._fd, 0, os.SEEK_CUR) >= info.st_size

    def _next_exists(self) -> bool:
        try:
            os.stat(_name(self._job, self._attempt, self._generation + 1), dir_fd=self._dir, follow_symlinks=False)
        except OSError:
            return False
        return True

    def close(self) -> None:
        for fd in (self._fd, self._dir):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd, self._dir = None, -1
