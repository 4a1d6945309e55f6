"""Run one shell command: ``sh -c`` in its own process group, output kept as a bounded tail.

The worker multiplexes many runs on one thread, so nothing here blocks: output is read when the
pipe is readable, and at most ``limit`` bytes of it are ever held, however much a job writes.

A job's process group dies with its worker, without ``PR_SET_PDEATHSIG`` on the job: posix_spawn
cannot run code in the child, and a parent-death signal would reach only the shell, not the
processes of the group it leads (an exec wrapper would have to stay resident per job to kill the
group). Instead: a worker told to stop (SIGTERM, also sent when its supervisor dies) stops its
jobs' groups after ``shutdown-grace``; a SIGKILLed worker's jobs are re-parented to the
supervisor, the child subreaper, which kills their groups at once.

A job's ``setsid`` children leave its process group, so the group kill misses them. A worker
process calls :func:`adopt_orphans` and becomes a child subreaper, so such an orphan is re-parented
to it once its parent in the job exits; :func:`sweep_orphans` (when a job ends, and at most once a
second while jobs run) kills every orphan that cannot belong to a job still running, and reaps it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Callable

from queuectl.core.defaults import OUTPUT_LIMIT
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


_SWEEP_EVERY_S = 1.0
_live_shells: set[int] = set()  # pids of the job shells this process started and has not finished
_next_sweep = 0.0
_adopting = False  # set by adopt_orphans(): only then is a child we did not start an orphan
_spare_all: Callable[[], bool] = bool  # bool() is False: until set, orphans are swept (spare_orphans_while)
_PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process a child subreaper and sweep orphans from now on (Linux; else False).

    For the worker's own process only: in any other (a test runner running a worker in-process,
    say) the children it did not start as job shells are its own, and must not be killed.
    """
    global _adopting
    import ctypes

    try:
        _adopting = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        _adopting = False
    return _adopting


def trim_heap() -> None:
    """``malloc_trim(0)``: hand the heap's free pages back to the system (glibc only; elsewhere
    nothing). ctypes is loaded already, for :func:`adopt_orphans`."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def spare_orphans_while(busy: Callable[[], bool]) -> None:
    """Kill no orphan while ``busy()`` holds: an on-finish hook runs in a thread of this process,
    and what it leaves running in the background is re-parented to us like a job's orphan, with
    nothing to tell the two apart. A hook's leftovers are swept once the hook is done."""
    global _spare_all
    _spare_all = busy


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """State, process group, session and start time (clock ticks) of ``pid``; None once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None  # gone; any other failure (out of descriptors) raises: the sweep then spares all
    return fields[0].decode(), int(fields[2]), int(fields[3]), int(fields[19])


def _orphans() -> list[int]:
    """Children of this process that it did not start as a job shell: descendants re-parented to it.

    Read from the main thread's ``children`` list, not by ppid: the on-finish hooks are started by
    the housekeeper's thread, so they are that thread's children and never taken for orphans.
    Without that file (an old kernel) nothing is reported: no hook is ever mistaken for one.
    """
    me = os.getpid()
    try:  # os.open, not open(): read after every job, and a file object costs several syscalls more
        fd = os.open(f"/proc/{me}/task/{me}/children", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = chunk = os.read(fd, 65536)
            while chunk:  # a long list may come in parts
                chunk = os.read(fd, 65536)
                data += chunk
        finally:
            os.close(fd)
        pids = [int(word) for word in data.split()]
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if pid not in _live_shells]


def sweep_orphans(wait_s: float = 0.05) -> int:
    """Kill and reap the orphans that belong to no job still running; returns how many were killed.

    An orphan is spared while it may be a running job's: its session is that job's (the job leads
    its own session), or it started no earlier than the oldest running job's shell (a ``setsid``
    child has a session of its own, but never starts before its job). Anything else outlived the
    job that started it. A killed orphan's own children are re-parented to us in turn: a few rounds.
    """
    global _next_sweep
    _next_sweep = time.monotonic() + _SWEEP_EVERY_S
    killed = 0
    if not _adopting or _spare_all():
        return killed
    try:
        return _sweep(wait_s)
    except OSError:
        return killed  # /proc could not be read (out of descriptors?): kill nothing we cannot place


def _sweep(wait_s: float) -> int:
    killed = 0
    my_group = os.getpgrp()
    for _ in range(3):
        orphans = _orphans()
        if not orphans:
            break
        live = [info for info in map(_stat, _live_shells) if info is not None]
        live_sessions = {info[2] for info in live}
        oldest_live = min((info[3] for info in live), default=None)
        doomed = []
        for pid in orphans:
            info = _stat(pid)
            if info is None:
                continue
            state, pgid, sid, started = info
            if state not in ("Z", "X"):
                if sid in live_sessions or (oldest_live is not None and started >= oldest_live):
                    continue
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pgid == pid and pgid != my_group:
                        os.killpg(pgid, signal.SIGKILL)  # it leads a group: its children too
                    else:
                        os.kill(pid, signal.SIGKILL)
                killed += 1
            doomed.append(pid)
        deadline = time.monotonic() + wait_s
        while doomed:
            doomed = [pid for pid in doomed if not _reaped(pid)]
            if not doomed or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        if doomed:
            break  # still dying (or spared): the next sweep reaps them
    return killed


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


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
        _live_shells.add(self.pid)
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

        Also reaps, at most once a second, orphans left by jobs that ended (see :func:`sweep_orphans`):
        the worker calls this for every running job on each turn of its loop.
        """
        if self.returncode is None and time.monotonic() >= _next_sweep:
            sweep_orphans(wait_s=0.0)
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
        _live_shells.discard(self.pid)
        sweep_orphans()
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
