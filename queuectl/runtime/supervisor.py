"""Start, watch and stop N worker processes (``queuectl worker start``).

The supervisor restarts a worker that died (and says so), forwards SIGTERM/Ctrl-C as one
graceful stop (a second one hurries), and exits once every worker has stopped. It registers as
the *child subreaper* of its tree, so a job whose worker was SIGKILLed is re-parented to it
instead of living on unsupervised: it kills that job's process group at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from queuectl.core.config import ENV_DB
from queuectl.runtime.signalpipe import open_signal_pipe, read_signals

_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_RESTART_BACKOFF_MAX = 30.0


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [supervisor {os.getpid()}] {message}", file=sys.stderr,
          flush=True)


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to us (not available elsewhere: then False)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@dataclass
class WorkerProcess:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    failures: int = 0


class Supervisor:
    """Keeps ``count`` workers alive until told to stop."""

    def __init__(
        self, db_url: str, count: int, queues: list[str] | None, concurrency: int, burst: bool = False
    ) -> None:
        self.db_url = db_url
        self.count = count
        self.queues = queues
        self.concurrency = concurrency
        self.burst = burst
        self.workers: dict[int, WorkerProcess] = {}
        self.stopping = False
        self.restart_at: dict[int, float] = {}
        self.failures: dict[int, int] = {}

    def _spawn(self, index: int) -> None:
        env = dict(os.environ, **{ENV_DB: self.db_url, "QUEUECTL_SUPERVISED": "1"})
        cmd = [sys.executable, "-m", "queuectl.runtime.worker", "--concurrency", str(self.concurrency)]
        if self.queues:
            cmd += ["--queue", ",".join(self.queues)]
        if self.burst:
            cmd.append("--burst")
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        self.workers[proc.pid] = WorkerProcess(index, proc, time.monotonic())

    def run(self) -> int:
        subreaper = become_subreaper()
        # the loop sleeps in select() on this pipe: a worker's exit (SIGCHLD) or a stop request
        # (SIGTERM) is handled at once
        wake_read = open_signal_pipe()
        for index in range(self.count):
            self._spawn(index)
        log(f"started {self.count} worker(s); Ctrl-C or SIGTERM stops them gracefully"
            + ("" if subreaper else " (no subreaper: orphaned jobs are not cleaned up)"))
        while True:
            self._reap()
            self._restart_due()
            if not self.workers and (self.stopping or not self.restart_at):
                break
            timeout = 1.0
            if self.restart_at and not self.stopping:
                timeout = max(0.0, min(self.restart_at.values()) - time.monotonic())
            select.select([wake_read], [], [], timeout)
            received = read_signals(wake_read)
            for _ in range(sum(1 for signum in received if signum in _STOP_SIGNALS)):
                self._forward_stop()
        log("all workers stopped")
        return 0

    def _forward_stop(self) -> None:
        first = not self.stopping
        self.stopping = True
        self.restart_at.clear()
        log("stopping workers gracefully" if first else "stopping workers now (second signal)")
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue  # an orphaned job re-parented to us, now reaped
            worker.proc.returncode = os.waitstatus_to_exitcode(status)
            self._kill_orphans()
            code = worker.proc.returncode
            if code == 0:
                if not self.stopping:
                    log(f"worker {worker.index} (pid {pid}) stopped on request")
                continue
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            if self.stopping:
                log(f"worker {worker.index} (pid {pid}) ended with {how}")
                continue
            failures = self.failures.get(worker.index, 0) + 1
            if time.monotonic() - worker.started > 60:
                failures = 1
            self.failures[worker.index] = failures
            delay = min(_RESTART_BACKOFF_MAX, 0.5 * 2 ** (failures - 1))
            log(f"worker {worker.index} (pid {pid}) died ({how}); restarting in {delay:g}s")
            self.restart_at[worker.index] = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.restart_at.items()):
            if now >= when and not self.stopping:
                del self.restart_at[index]
                self._spawn(index)

    def _kill_orphans(self) -> None:
        """Kill the process groups of our children that are not workers: jobs of a dead worker."""
        me = os.getpid()
        worker_pids = set(self.workers)
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if not entry.isdigit() or int(entry) in worker_pids:
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            ppid, pgid = int(fields[1]), int(fields[2])
            if ppid == me:
                log(f"killing orphaned job process group {pgid} of a dead worker")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if pgid == os.getpgrp():  # killed before its job left our group: only that one
                        os.kill(int(entry), signal.SIGKILL)
                    else:
                        os.killpg(pgid, signal.SIGKILL)
