"""Run one shell command: ``sh -c`` in its own process group, output kept as a bounded tail.

The worker multiplexes many runs on one thread, so nothing here blocks: output is read when the
pipe is readable, and at most ``limit`` bytes of it are ever held, however much a job writes.

A job's process group dies with its worker, without ``PR_SET_PDEATHSIG`` on the job: posix_spawn
cannot run code in the child, and a parent-death signal would reach only the shell, not the
processes of the group it leads (an exec wrapper would have to stay resident per job to kill the
group). Instead: a worker told to stop (SIGTERM, also sent when its supervisor dies) stops its
jobs' groups after ``shutdown-grace``; a SIGKILLed worker's jobs are re-parented to the
supervisor, the child subreaper, which kills their groups at once.

A job's ``setsid`` children leave its process group, so the group kill misses them: those are
:mod:`queuectl.runtime.orphans`'s, which a run tells when its shell starts and ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from queuectl.core.defaults import OUTPUT_LIMIT
from queuectl.runtime import orphans
from queuectl.runtime.progress import PROGRESS_FD, PROGRESS_FD_ENV, Progress

if TYPE_CHECKING:
    import subprocess

SHELL = "/bin/sh"
_READ_CHUNK = 65536
_READ_BUDGET = 16 * _READ_CHUNK  # per call: a flood of output must not starve the other jobs


def job_environment(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The worker's environment without queuectl's own variables (the database URL), plus the job's."""
    env = {key: value for key, value in base.items() if not key.startswith("QUEUECTL_")}
    env.update(extra)
    return env


# the worker ran out of something of its own: the job is not to blame and may start later
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.EAGAIN)


class StartError(Exception):
    """The command could not be started at all (its cwd is missing, say).

    ``out_of_resources``: the worker itself is short of file descriptors or processes, so the
    attempt must not count against the job (it is handed back, and the worker claims less).
    """

    def __init__(self, message: str, error_number: int | None = None) -> None:
        super().__init__(message)
        self.out_of_resources = error_number in _OUT_OF_RESOURCES


def _open_channel() -> Progress | None:
    """A progress channel, or None when the worker is short of descriptors: the job then runs
    without one (its output pipe, opened first, is what it cannot do without)."""
    try:
        return Progress()
    except OSError:
        return None


def _spawn_fast(command: str, env: dict[str, str], progress: bool) -> tuple[int, int, Progress | None]:
    """``sh -c`` via posix_spawn (vfork-like: its cost does not grow with the worker's memory).

    stdin is /dev/null, stdout and stderr share one pipe, and the job leads a new session, so
    its whole process group can be signalled; with ``progress`` its progress channel is at
    descriptor 3. Returns the pid, the output pipe's reading end and the channel.
    """
    try:
        read_fd, write_fd = os.pipe()
    except OSError as exc:
        raise StartError(f"cannot open a pipe for the job's output: {exc.strerror}", exc.errno) from None
    channel = _open_channel() if progress else None
    progress_fd = channel.write_fd if channel is not None else None
    if channel is not None:
        env = {**env, PROGRESS_FD_ENV: str(PROGRESS_FD)}
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, write_fd, 1),
        (os.POSIX_SPAWN_DUP2, write_fd, 2),
    ]
    if progress_fd is not None:  # the job's end of its progress channel, at a fixed number
        actions.append((os.POSIX_SPAWN_DUP2, progress_fd, PROGRESS_FD))
    try:
        pid = os.posix_spawn(
            SHELL,
            [SHELL, "-c", command],
            env,
            file_actions=actions,
            setsid=True,
            # Python ignores SIGPIPE and SIGXFSZ; a shell job expects the defaults (as Popen restores)
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT),
        )
    except OSError as exc:
        os.close(read_fd)
        if channel is not None:
            channel.close()
        raise StartError(f"cannot start {SHELL}: {exc.strerror}", exc.errno) from None
    finally:
        os.close(write_fd)
    return pid, read_fd, channel


class Run:
    """One running command. Call :meth:`read` when :meth:`fileno` is readable."""

    def __init__(
        self, command: str, cwd: str | None, env: dict[str, str], limit: int = OUTPUT_LIMIT, progress: bool = False
    ) -> None:
        self.limit = limit
        self.started = time.monotonic()
        self._tail = bytearray()
        self._dropped = 0
        self._dirty = True
        self.spool: Any = None  # a SpoolWriter: each chunk read is written there too (logs --follow)
        self.eof = False
        self.returncode: int | None = None
        self.rusage: Any = None  # the shell's resource use (with its waited-for children), from wait4
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None
        self.progress: Progress | None = None
        if cwd is None and hasattr(os, "posix_spawn"):
            self.pid, fd, self.progress = _spawn_fast(command, env, progress)
            self._fd = fd
        else:
            self.progress = _open_channel() if progress else None
            if self.progress is not None:
                env = {**env, PROGRESS_FD_ENV: str(self.progress.write_fd)}
            try:
                fd = self._start_in(command, cwd, env)
            except BaseException:
                if self.progress is not None:
                    self.progress.close()
                raise
            self._fd = fd
        if self.progress is not None:
            self.progress.job_started()
        orphans.shell_started(self.pid)
        os.set_blocking(fd, False)

    def _start_in(self, command: str, cwd: str | None, env: dict[str, str]) -> int:
        """The portable path, also used for a job with its own working directory."""
        import subprocess  # lazily: most jobs take the posix_spawn path, and an idle worker none (0.8 MB)

        try:
            self._proc = subprocess.Popen(
                [SHELL, "-c", command],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=(self.progress.write_fd,) if self.progress is not None else (),
            )
        except FileNotFoundError as exc:
            if cwd and exc.filename in (cwd, None) and not os.path.isdir(cwd):
                raise StartError(f"working directory {cwd} does not exist") from None
            raise StartError(f"cannot start /bin/sh: {exc.strerror}") from None
        except NotADirectoryError:
            raise StartError(f"working directory {cwd} is not a directory") from None
        except PermissionError:
            raise StartError(f"permission denied entering working directory {cwd}") from None
        except OSError as exc:
            raise StartError(f"cannot start the command: {exc.strerror}", exc.errno) from None
        assert self._proc.stdout is not None
        try:
            fd = os.dup(self._proc.stdout.fileno())
        except OSError as exc:  # out of descriptors after the start: stop it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.stdout.close()
            self._proc.wait()
            # the command may have run already: a failed attempt, never handed back to run again
            raise StartError(f"cannot keep the job's output pipe: {exc.strerror}") from None
        self._proc.stdout.close()
        self.pid = self._proc.pid
        return fd

    def fileno(self) -> int:
        return self._fd if self._fd is not None else -1

    def read(self) -> None:
        """Take what the pipe holds now and keep the last ``limit`` bytes; sets ``eof`` at the end.

        The pipe is closed only by :meth:`finish`, so a selector can unregister it first.
        """
        if self._fd is None or self.eof:
            return
        for _ in range(_READ_BUDGET // _READ_CHUNK):
            try:
                chunk = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return
            self._dirty = True
            self._tail += chunk
            if self.spool is not None:
                self.spool.write(chunk)
            # trimmed once it holds twice the limit: a 16 MiB tail is not moved on every chunk
            excess = len(self._tail) - self.limit
            if excess > max(self.limit, _READ_BUDGET):
                del self._tail[:excess]
                self._dropped += excess

    def _close_pipe(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self.eof = True

    def poll(self) -> int | None:
        """The exit status once the shell ended (negative: killed by that signal), else None.

        Also reaps, at most once a second, orphans left by jobs that ended
        (:func:`queuectl.runtime.orphans.sweep_if_due`): the worker calls this for every running
        job on each turn of its loop.
        """
        if self.returncode is None:
            orphans.sweep_if_due()
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                pid, status, rusage = os.wait4(self.pid, os.WNOHANG)  # wait4: its resource use too
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
                    self.rusage = rusage
                    if self._proc is not None:
                        self._proc.returncode = self.returncode  # reaped here: Popen must not wait
        return self.returncode

    def resources(self) -> tuple[int | None, float | None]:
        """Peak memory (max RSS, KiB) and CPU seconds (user + system) of the shell and the
        children it waited for, once it ended (None before, or where wait4 gave nothing)."""
        if self.rusage is None:
            return None, None
        return int(self.rusage.ru_maxrss), float(self.rusage.ru_utime + self.rusage.ru_stime)

    def signal(self, signum: int) -> None:
        """Send a signal to the whole process group: the shell and everything it started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def finish(self) -> None:
        """After the shell exited: drain the pipe, end leftover background processes, close.

        Its group is killed, then the orphans it left outside the group (``setsid`` children).
        """
        self.read()
        self.signal(signal.SIGKILL)
        orphans.shell_ended(self.pid)
        self._close_pipe()
        self.close_spool()
        if self.progress is not None:
            self.progress.read()  # the last report the job wrote before it ended
            self.progress.close()

    def close_spool(self) -> None:
        """The attempt is over for this worker: its live output file goes."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def output(self, only_if_changed: bool = False) -> str | None:
        """The output tail as text: invalid UTF-8 replaced, NUL bytes made visible, a marker if cut."""
        if only_if_changed and not self._dirty:
            return None
        self._dirty = False
        kept_bytes = bytes(self._tail[-self.limit :])
        text = kept_bytes.decode("utf-8", errors="replace").replace("\x00", "\\0")
        dropped = self._dropped + len(self._tail) - len(kept_bytes)
        encoded = text.encode()
        if len(encoded) > self.limit:  # replacements grew it: keep the last `limit` bytes of text
            kept = encoded[-self.limit :].decode("utf-8", errors="ignore")
            dropped += len(kept_bytes) - len(kept.encode())  # roughly, in the job's own bytes
            text = kept
        if dropped > 0:
            text = f"[... {dropped} earlier bytes of output dropped ...]\n{text}"
        return text

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
