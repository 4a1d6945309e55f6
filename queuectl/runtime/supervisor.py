"""Start, watch and stop N worker processes (``queuectl worker start``).

The supervisor restarts a worker that died (and says so), forwards SIGTERM/Ctrl-C as one
graceful stop (a second one hurries), and exits once every worker has stopped. It registers as
the *child subreaper* of its tree, so a job whose worker was SIGKILLed is re-parented to it
instead of living on unsupervised: it kills that job's process group at once.

Workers die with it: each is spawned with ``PR_SET_PDEATHSIG`` = SIGTERM (Linux), so a SIGKILLed
supervisor leaves no orphan worker claiming jobs that nobody restarts or cleans up after; the
SIGTERM is the usual graceful stop, so their running jobs finish (or are stopped and requeued)
within ``shutdown-grace``. ``worker stop`` reaches workers through the database, not us; so
while a dead worker waits for its restart we look at its registry row, and a stop requested
there means it is not replaced (nor is any other).

We find our workers' registry rows by id, never by host and pid: we pick each worker's id (its
``--nonce``) when we spawn it. A dead worker's row stays an hour (shown dead), and by then its pid
may belong to a new worker of ours (pid reuse: containers, small pid namespaces); that old row's
stop request and current jobs are not the new worker's.

A worker stopped by a signal (a job ran ``kill -STOP $PPID``) is noticed through SIGCHLD
(``WUNTRACED``) and resumed with SIGCONT. Each worker makes itself a child subreaper as well
(``orphans.adopt_orphans``), so a job's ``setsid`` children are re-parented to their worker, which
kills them with the job. A worker
that exits with ``EXIT_CORRUPT`` found the database damaged: restarting it would only fail again
(or make it worse), so the others are stopped and we exit with that code.

With ``--count MIN..MAX`` it also adds and retires workers with the queue's lag: the rule is in
:mod:`queuectl.runtime.autoscale`; a retired worker is sent SIGUSR1, finishes its jobs and exits 0,
and is not replaced.

The database URL (it may hold a password) reaches a worker over an inherited pipe named by
``QUEUECTL_DB_FD``, never in its environment: any job could read that from ``/proc/$PPID/environ``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from queuectl.core.config import ENV_DB
from queuectl.core.defaults import RESTART_BACKOFF_MAX_S
from queuectl.core.errors import EXIT_CORRUPT
from queuectl.core.models import new_worker_nonce, worker_id_for
from queuectl.runtime import loglines

if TYPE_CHECKING:
    from queuectl.runtime.autoscale import Autoscaler, ScalePolicy
from queuectl.runtime.libc import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, prctl
from queuectl.runtime.signalpipe import open_signal_pipe, read_signals
from queuectl.runtime.urlpipe import ENV_DB_FD, read_url_fd, url_pipe

_STOP_CHECK_S = 1.0  # while a restart is pending: how often the registry is read for a stop
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def log(message: str, event: str = "message", **fields: Any) -> None:
    """One record (text or JSON: see runtime/loglines.py) from ``supervisor <pid>``."""
    loglines.emit(f"supervisor {os.getpid()}", event, message, **fields)


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to us (not available elsewhere: then False)."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def _die_with(parent: int) -> None:
    """In the child before exec: get SIGTERM when the supervisor dies (it survives the exec)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the prctl: do not start an orphan
        os._exit(1)


@dataclass
class WorkerProcess:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    worker_id: str  # its registry row's id
    failures: int = 0


class Supervisor:
    """Keeps ``count`` workers alive until told to stop (with a ``scale`` policy: between its
    minimum and maximum, ``count`` being the minimum)."""

    def __init__(
        self,
        db_url: str,
        count: int,
        queues: list[str] | None,
        concurrency: int,
        burst: bool = False,
        scale: ScalePolicy | None = None,
        log_format: str = "text",
    ) -> None:
        loglines.set_format(log_format)
        self.log_format = log_format
        self.db_url = db_url
        self.count = scale.minimum if scale else count
        self.scaler: Autoscaler | None = None
        if scale is not None and scale.maximum > scale.minimum:
            from queuectl.runtime.autoscale import Autoscaler

            self.scaler = Autoscaler(scale)
        self.retiring: set[int] = set()  # pids of workers told to finish their jobs and exit
        self._next_scale_check = 0.0
        self._scale_blind = False  # the last read for autoscaling failed (and said so)
        self.queues = queues
        self.concurrency = concurrency
        self.burst = burst
        self.workers: dict[int, WorkerProcess] = {}
        self.stopping = False
        self.restart_at: dict[int, float] = {}
        self.dead_id: dict[int, str] = {}  # index waiting for a restart -> id of the worker that died
        self.stop_requested = False  # through the database: no restart any more
        self.failures: dict[int, int] = {}
        self._store: Any = None
        self._next_stop_check = 0.0
        self.corrupt = False  # a worker found the database damaged: nothing is restarted

    def _spawn(self, index: int) -> None:
        env = {key: value for key, value in os.environ.items() if key not in (ENV_DB, ENV_DB_FD)}
        cmd = [sys.executable, "-m", "queuectl.runtime.worker", "--concurrency", str(self.concurrency)]
        if self.queues:
            cmd += ["--queue", ",".join(self.queues)]
        if self.burst:
            cmd.append("--burst")
        if self.scaler is not None:
            cmd += ["--scale", self.scaler.policy.label]
        nonce = new_worker_nonce()  # the worker's id is worker_id_for(its pid, nonce)
        cmd += ["--nonce", nonce]
        me = os.getpid()
        url_fd = url_pipe(self.db_url)
        env.update({ENV_DB_FD: str(url_fd), "QUEUECTL_SUPERVISED": "1", loglines.ENV_LOG_FORMAT: self.log_format})
        try:
            proc = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, pass_fds=(url_fd,), preexec_fn=lambda: _die_with(me)
            )
        finally:
            os.close(url_fd)
        self.workers[proc.pid] = WorkerProcess(index, proc, time.monotonic(), worker_id_for(proc.pid, nonce))

    def run(self) -> int:
        subreaper = become_subreaper()
        # the loop sleeps in select() on this pipe: a worker's exit (SIGCHLD) or a stop request
        # (SIGTERM) is handled at once
        wake_read = open_signal_pipe()
        for index in range(self.count):
            self._spawn(index)
        scaling = f" (autoscaling {self.scaler.policy.label})" if self.scaler else ""
        log(
            f"started {self.count} worker(s){scaling}; Ctrl-C or SIGTERM stops them gracefully"
            + ("" if subreaper else " (no subreaper: orphaned jobs are not cleaned up)"),
            "supervisor_started",
            workers=self.count,
            scale=self.scaler.policy.label if self.scaler else None,
        )
        while True:
            self._reap()
            self._check_stop_requests()
            self._restart_due()
            if not self.workers and (self.stopping or not self.restart_at):
                break
            self._autoscale()
            timeout = 1.0
            if self.restart_at and not self.stopping:
                timeout = max(0.0, min(min(self.restart_at.values()) - time.monotonic(), _STOP_CHECK_S))
            if self.scaler is not None:
                timeout = max(0.0, min(timeout, self._next_scale_check - time.monotonic()))
            select.select([wake_read], [], [], timeout)
            received = read_signals(wake_read)
            for _ in range(sum(1 for signum in received if signum in _STOP_SIGNALS)):
                self._forward_stop()
        log("all workers stopped", "supervisor_stopped")
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
        return EXIT_CORRUPT if self.corrupt else 0

    def _forward_stop(self) -> None:
        first = not self.stopping
        self.stopping = True
        self.restart_at.clear()
        log("stopping workers gracefully" if first else "stopping workers now (second signal)")
        for worker in self.workers.values():
            # os.kill, not Popen.send_signal: its poll() would reap an exited worker behind the
            # back of _reap, which would then wait for it forever
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.proc.pid, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSTOPPED(status):
                self._resume(pid, status)
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue  # an orphaned job re-parented to us, now reaped
            worker.proc.returncode = os.waitstatus_to_exitcode(status)
            self._kill_orphans()
            code = worker.proc.returncode
            if pid in self.retiring:
                self.retiring.discard(pid)
                if code == 0:
                    log(f"worker {worker.index} (pid {pid}) retired: scaled down", "worker_retired", pid=pid)
                    continue
            if code == 0:
                if self.scaler is not None:
                    self.stop_requested = True  # `worker stop` (or a burst's end): no more growing
                if not self.stopping:
                    why = "its burst is done" if self.burst else "stopped on request"
                    log(f"worker {worker.index} (pid {pid}): {why}", "worker_exited", pid=pid)
                continue
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            if code == EXIT_CORRUPT and not self.corrupt:
                log(f"worker {worker.index} (pid {pid}): the database is damaged: not restarting")
                self.corrupt = True
                self.stop_requested = True
                if not self.stopping:
                    self._forward_stop()
                continue
            self._mark_dead(worker)
            if self.stopping or self.stop_requested:
                log(f"worker {worker.index} (pid {pid}) ended with {how}")
                continue
            failures = self.failures.get(worker.index, 0) + 1
            if time.monotonic() - worker.started > 60:
                failures = 1
            self.failures[worker.index] = failures
            delay = min(RESTART_BACKOFF_MAX_S, 0.5 * 2 ** (failures - 1))
            log(
                f"worker {worker.index} (pid {pid}) died ({how}); restarting in {delay:g}s",
                "worker_died",
                pid=pid,
                error=how,
            )
            self.restart_at[worker.index] = time.monotonic() + delay
            self.dead_id[worker.index] = worker.worker_id
            self._next_stop_check = 0.0  # it may have died of the stop request's timing: look now

    def _autoscale(self) -> None:
        """Add or retire one worker, when :mod:`queuectl.runtime.autoscale` says so."""
        mono = time.monotonic()
        if self.scaler is None or mono < self._next_scale_check:
            return
        self._next_scale_check = mono + self.scaler.policy.check_every
        if self.stopping or self.stop_requested or self.corrupt:
            return
        from queuectl.runtime.autoscale import read_load

        ours = {pid: w.worker_id for pid, w in self.workers.items() if pid not in self.retiring}
        try:
            lag, busy = read_load(self._open_store(), self.queues, ours)
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the supervisor
            if not self._scale_blind:  # once per outage, not once a second
                log(f"cannot read the queue's lag ({exc}); not scaling", "autoscale_skipped", error=str(exc))
            self._scale_blind = True
            return
        self._scale_blind = False
        decision = self.scaler.decide(mono, busy, lag)
        if decision is None:
            return
        self.scaler.changed(mono)
        if decision == "grow":
            taken = {w.index for w in self.workers.values()} | set(self.restart_at)
            index = next(i for i in range(len(taken) + 1) if i not in taken)
            self._spawn(index)
            log(
                f"scaling up to {len(ours) + 1} worker(s): the oldest due job has waited {lag:.1f}s",
                "scaled_up",
                workers=len(ours) + 1,
                lag=round(lag or 0.0, 3),
            )
            return
        worker = self.workers[int(decision)]
        self.retiring.add(int(decision))
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGUSR1)
        log(
            f"scaling down to {len(ours) - 1} worker(s): worker {worker.index} (pid {decision}) is idle; it retires",
            "scaled_down",
            workers=len(ours) - 1,
            pid=int(decision),
        )

    def _resume(self, pid: int, status: int) -> None:
        """A worker stopped by a signal (a job's ``kill -STOP $PPID``) would hold its jobs frozen:
        continue it. A stopped orphaned job is left alone (it is killed with its group anyway)."""
        worker = self.workers.get(pid)
        if worker is None:
            return
        name = signal.Signals(os.WSTOPSIG(status)).name
        log(f"worker {worker.index} (pid {pid}) was stopped ({name}); resuming it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def _check_stop_requests(self) -> None:
        """Drop pending restarts once ``worker stop`` asked a dead worker (or its siblings) to stop.

        The stop request marks the registry rows of the workers alive at that moment, the dead
        one included (``request_stop`` asks a row that died in the last ``DEAD_STOPPABLE_S``,
        longer than our restart backoff); a replacement would register afresh and never see it.
        Only the rows of the workers we wait to restart count, found by id: an older dead row
        with the same pid (reused) may carry a stop request of its own. The database is opened
        only while a restart is pending.
        """
        if not self.restart_at or self.stopping or time.monotonic() < self._next_stop_check:
            return
        self._next_stop_check = time.monotonic() + _STOP_CHECK_S
        waiting = set(self.dead_id.values())
        stopped = [
            row for row in self._registry_rows() if row.id in waiting and row.stop_requested and row.state != "stopped"
        ]
        if not stopped:
            return
        self.stop_requested = True
        for index in sorted(self.restart_at):
            log(f"worker {index} is not restarted: a stop was requested through the database")
        self.restart_at.clear()
        for row in stopped:  # the dead worker cannot say it stopped: say it for it
            with contextlib.suppress(Exception):
                from queuectl.service import workers as registry

                registry.beat_worker(self._store, row.id, self._store.now(), "stopped", [])

    def _mark_dead(self, worker: WorkerProcess) -> None:
        """A worker died without saying so (SIGKILL, a crash): mark its registry row dead now,
        so that ``worker list`` and the dashboard do not count it alive until its lease ends."""
        try:
            from queuectl.service import workers as registry

            registry.mark_dead(self._open_store(), worker.worker_id)
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the supervisor
            log(f"cannot mark worker pid {worker.proc.pid} dead in the registry ({exc}); its lease will tell")

    def _open_store(self) -> Any:
        if self._store is None:
            from queuectl.store import open_store

            self._store = open_store(self.db_url)
        return self._store

    def _registry_rows(self) -> list[Any]:
        """This host's registry rows (any error: none, so restarts go on as before)."""
        import socket

        try:
            from queuectl.service import workers as registry

            host = socket.gethostname()
            return [row for row in registry.list_workers(self._open_store()) if row.host == host]
        except Exception as exc:  # noqa: BLE001 - an outage must not stop the supervisor
            log(f"cannot read the worker registry ({exc}); a stop request may be missed")
            return []

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.restart_at.items()):
            if now >= when and not self.stopping and not self.stop_requested:
                del self.restart_at[index]
                self.dead_id.pop(index, None)
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


def main(argv: list[str] | None = None) -> int:
    """``worker start --detach`` runs this, with the database URL on the ``QUEUECTL_DB_FD`` pipe.

    The parent ``worker start`` has checked the options and the queue already; the URL stays out
    of our environment and command line, as it does for the workers.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m queuectl.runtime.supervisor")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--queue", default="", help="comma-separated queues, in priority order")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--max-count", type=int, default=0)
    parser.add_argument("--scale-lag", type=float, default=5.0)
    parser.add_argument("--scale-idle", type=float, default=60.0)
    parser.add_argument("--scale-cooldown", type=float, default=10.0)
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args(argv)
    url = read_url_fd()
    if url is None:
        print(f"queuectl supervisor: no database URL on {ENV_DB_FD}", file=sys.stderr)
        return 2
    queues = [q for q in args.queue.split(",") if q] or None
    scale = None
    if args.max_count > args.count >= 1:
        from queuectl.runtime.autoscale import ScalePolicy

        scale = ScalePolicy(args.count, args.max_count, args.scale_lag, args.scale_idle, args.scale_cooldown)
    count, concurrency = max(1, args.count), max(1, args.concurrency)
    return Supervisor(url, count, queues, concurrency, args.burst, scale, args.log_format).run()


if __name__ == "__main__":
    sys.exit(main())
