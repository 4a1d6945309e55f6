"""One worker process: claim → run → heartbeat → record, for up to ``concurrency`` jobs at once.

A single thread multiplexes everything with a selector: job output pipes, a wake-up socket (new
work), and a self-pipe for signals (SIGCHLD: a job ended; SIGTERM: stop). Nothing polls in a
tight loop, so an idle worker costs next to nothing.

Run as ``python -m queuectl.runtime.worker`` by the supervisor. The database URL comes over an
inherited pipe named by ``QUEUECTL_DB_FD`` (never on the command line, where ``ps`` would show a
password, nor in the environment, where a job could read it in ``/proc``); ``QUEUECTL_DB`` is read
when the worker is started by hand. The cluster's chores are the housekeeper's
(:mod:`queuectl.runtime.housekeeper`), ticked from this loop.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from queuectl.core import lifecycle
from queuectl.core.config import ENV_DB, RuntimeConfig, output_limit_for, resolve_db_url
from queuectl.core.defaults import FORGET_WORKERS_AFTER_S as _FORGET_WORKERS_AFTER_S
from queuectl.core.defaults import RETRY_WRITE_S as _RETRY_WRITE_S
from queuectl.core.errors import EXIT_CORRUPT, EXIT_ERROR, QueuectlError, StoreCorrupt
from queuectl.core.models import (
    PENDING,
    Job,
    Lease,
    Outcome,
    WorkerInfo,
    worker_id_for,
)
from queuectl.runtime import loglines
from queuectl.runtime.executor import Run, StartError, job_environment
from queuectl.runtime.housekeeper import Housekeeper
from queuectl.runtime.leasekeeping import STORE_DOWN, LeaseKeeping
from queuectl.runtime.libc import malloc_trim
from queuectl.runtime.loglines import log
from queuectl.runtime.orphans import spare_orphans_while
from queuectl.runtime.signalpipe import open_signal_pipe, read_signals
from queuectl.runtime.slots import Slot, finished_line, outcome_of
from queuectl.service.config import load_config
from queuectl.service.workers import beat_worker, prune_workers, register_worker, show_current_jobs
from queuectl.store import Store, open_store
from queuectl.store.spool import SpoolWriter, open_spool_dir, spool_dir_for, sweep_stale

PUBLISH_EVERY_S = 0.25  # a change of our current jobs reaches the registry row this soon at most
SHORT_OF_RESOURCES_BACKOFF_S = 1.0  # after a start failed for want of descriptors: claim again this late
STARVED_STARTS_GIVE_UP = 3  # starts in a row failing for want of resources with nothing running: give up
IDLE_TRIM_AFTER_S = 1.0  # idle this long: the heap's free pages go back to the system (see _trim_when_idle)
FAULT_ENV = "QUEUECTL_TEST_FAULT"  # tests only: "die-after-claim", "die-before-record"


@dataclass
class WorkerOptions:
    queues: list[str] | None = None
    concurrency: int = 1
    burst: bool = False  # stop once nothing is eligible and nothing runs
    scale: str = ""  # the supervisor's autoscaling range ("1..4"), shown by `worker list`
    # PID 1 in every container: the random part alone must keep ids apart across hosts
    worker_id: str = field(default_factory=lambda: worker_id_for(os.getpid()))


class Worker(LeaseKeeping):
    """The loop of one worker process; :meth:`run` returns its exit code."""

    def __init__(self, store: Store, options: WorkerOptions) -> None:
        self.store = store
        self.opts = options
        self.id = options.worker_id
        self.config: RuntimeConfig = load_config(store)
        self.slots: dict[str, Slot] = {}
        self.unsent: list[tuple[Lease, Outcome]] = []
        self.stop_signals = 0
        self.stopping = False
        self.grace_deadline: float | None = None
        self.fault = os.environ.get(FAULT_ENV, "")
        self.selector = selectors.DefaultSelector()
        self.last_ok_beat = time.monotonic()
        self.store_down = False
        self.info: WorkerInfo | None = None  # the registry record, re-created if it was pruned
        self.host = socket.gethostname()
        self.want_claim = True
        self.idle_until = 0.0
        self.busy_at = time.monotonic()  # the last loop with a job running (or the start)
        self.heap_trimmed = False
        self.claim_cap: int | None = None  # fewer than concurrency while short of descriptors
        self.starved_starts = 0  # resource failures in a row with no job of ours running
        self.gave_up: str | None = None  # why this worker stopped on its own (it then exits 1)
        self.claim_after = 0.0  # monotonic: no claim before (a start just failed for want of them)
        self.saving_output = True
        self.next_write_try = 0.0
        self.published_jobs: list[str] = []  # the current jobs the registry row shows
        self.next_publish = 0.0
        self.base_env = dict(os.environ)
        self.job_env = job_environment(self.base_env, {})  # filtered once, not per job (~35 keys)
        self.spool_dir = open_spool_dir(spool_dir_for(store.url), create=True)  # live output (logs --follow)
        if self.spool_dir is not None:
            sweep_stale(self.spool_dir)  # files of a worker that was killed
        self.supervised = bool(os.environ.get("QUEUECTL_SUPERVISED"))
        # a record per finished job in burst mode (a first user sees what ran) and in JSON logs (a
        # log shipper wants every job, and its start too); a foreground text log stays quiet per job
        self.log_starts = loglines.current_format() == "json"
        self.log_jobs = options.burst or self.log_starts
        self.job_queues: dict[str, str] = {}  # with log_jobs: a running job's queue, for its records
        self.housekeeper = Housekeeper(
            store, lambda: self.config, self.base_env, lambda text: log(self.id, text), wall=store.now
        )
        spare_orphans_while(self.housekeeper.busy)  # a hook's background children are not a job's

    # --- life cycle -------------------------------------------------------------------------

    def run(self) -> int:
        sig_read = open_signal_pipe()
        self.selector.register(sig_read, selectors.EVENT_READ, "signal")
        waker = None
        try:
            waker = self.store.waker(self.id)
        except OSError:
            waker = None
        if waker is not None:
            self.selector.register(waker, selectors.EVENT_READ, "wake")
        now = self.store.now()
        prune_workers(self.store, seen_before=now - _FORGET_WORKERS_AFTER_S)
        self.info = WorkerInfo(
            id=self.id,
            host=self.host,
            pid=os.getpid(),
            state="running",
            started_at=now,
            last_heartbeat=now,
            queues=",".join(self.opts.queues or ["*"]),
            concurrency=self.opts.concurrency,
            scale=self.opts.scale,
        )
        register_worker(self.store, self.info)
        queues = ",".join(self.opts.queues or ["*"])
        log(
            self.id,
            f"started (queues: {queues}, concurrency {self.opts.concurrency})",
            "worker_started",
            pid=os.getpid(),
            queue=queues,
            concurrency=self.opts.concurrency,
        )
        self._warn_of_skew()
        next_beat = time.monotonic()
        try:
            while True:
                mono = time.monotonic()
                if self._may_claim(mono):
                    self._claim()
                if (
                    self.stopping
                    and not self.slots
                    and not self.housekeeper.busy()
                    and (
                        not self.unsent or self.stop_signals > 1  # a second signal gives up on an outage
                    )
                ):
                    break
                events = self.selector.select(self._wait_seconds(next_beat))
                for key, _ in events:
                    if key.data == "signal":
                        self._on_signals(sig_read)
                    elif key.data == "wake":
                        if b"s" in waker.drain():  # type: ignore[union-attr]
                            next_beat = 0.0  # a stop request or a cancelled running job: renew and look now
                        self.want_claim = True
                    else:
                        self._read_output(key.data)
                self._reap()
                self._enforce_deadlines()
                if time.monotonic() >= next_beat:
                    self._heartbeat()
                    next_beat = time.monotonic() + self.config.heartbeat
                self._send_outcomes()
                self._publish_jobs()
                if self.housekeeper.tick(self.stopping):
                    self.want_claim = True
                self._trim_when_idle(time.monotonic())
        except BaseException:
            # a damaged database (main() prints the one line and exits 7) or a bug: nobody could
            # stop or record our jobs after us, so their process groups go with us
            self._abandon_jobs()
            raise
        finally:
            if waker is not None:
                waker.close()
        try:
            beat_worker(self.store, self.id, self.store.now(), "stopped", [])
        except QueuectlError:
            pass
        log(self.id, "stopped", "worker_stopped")
        if self.gave_up is not None:
            _say(f"queuectl worker: {self.gave_up}", self.id)
            return EXIT_ERROR
        return 0

    def _trim_when_idle(self, mono: float) -> None:
        """Once idle for a second (after start-up, after a busy spell), give the heap's free
        pages back: glibc keeps ~1.3 MB that imports and jobs freed mapped for the whole life of
        an idle worker. Not after every job of a drain, so that costs nothing while busy."""
        if self.slots:
            self.busy_at, self.heap_trimmed = mono, False
        elif not self.heap_trimmed and mono - self.busy_at >= IDLE_TRIM_AFTER_S:
            malloc_trim()
            self.heap_trimmed = True

    def _abandon_jobs(self) -> None:
        """A damaged database: no outcome can be recorded and no lease renewed, so waiting helps
        nobody. Kill the running jobs' process groups (they would outlive us as orphans)."""
        for slot in self.slots.values():
            if slot.run is not None:
                slot.run.signal(signal.SIGKILL)
                slot.run.close_spool()
                slot.run.poll()

    def _on_signals(self, fd: int) -> None:
        for signum in read_signals(fd):
            if signum in (signal.SIGINT, signal.SIGHUP) and self.supervised:
                # Ctrl-C or a closed terminal reached the whole terminal group: the supervisor
                # sends us SIGTERM (taking both as two signals would skip the grace)
                continue
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self.request_stop("signal")
            elif signum == signal.SIGUSR1 and self.supervised:
                self.retire()

    def retire(self) -> None:
        """The supervisor scales down: stop claiming, and exit once the running jobs are done,
        however long they take (no grace, nothing killed). A later SIGTERM is a normal stop."""
        if not self.stopping:
            self.stopping = True
            log(self.id, f"retiring (scaled down): {len(self.slots)} running job(s) finish first", "worker_retiring")

    def request_stop(self, why: str) -> None:
        """First call: stop claiming, let running jobs finish within the grace. Second: hurry."""
        self.stop_signals += 1
        mono = time.monotonic()
        if not self.stopping or self.grace_deadline is None:  # retiring has no grace: now it has
            self.stopping = True
            self.grace_deadline = mono + self.config.shutdown_grace
            log(
                self.id,
                f"stopping ({why}): {len(self.slots)} running job(s) may finish within {self.config.shutdown_grace:g}s",
                "worker_stopping",
                reason=why,
            )
        elif why == "signal" and self.stop_signals > 1:
            self.grace_deadline = mono
            log(self.id, "stopping now: running jobs are stopped and requeued", "worker_hurrying")

    # --- claiming and starting --------------------------------------------------------------

    def _claim_limit(self) -> int:
        """How many jobs this worker may hold now: ``concurrency``, or less while it is short of
        file descriptors or processes (each job needs a pipe and a process of the worker's own)."""
        if self.claim_cap is None:
            return self.opts.concurrency
        return max(1, min(self.claim_cap, self.opts.concurrency))

    def _may_claim(self, mono: float) -> bool:
        if self.stopping or len(self.slots) >= self._claim_limit() or mono < self.claim_after:
            return False
        return self.want_claim or mono >= self.idle_until

    def _claim(self) -> None:
        free = self._claim_limit() - len(self.slots)
        now = self.store.now()
        try:
            jobs = lifecycle.claim(self.store, self.id, self.opts.queues, now, self.config.lease, free)
        except STORE_DOWN as exc:
            log(self.id, f"cannot claim: {exc}")
            self._writes_refused(exc)
            self._go_idle(now)
            return
        self._take(jobs, free, now)

    def _take(self, jobs: list[Job], asked: int, now: float) -> None:
        """Start the jobs a claim returned; a short answer means the queue is drained for now."""
        if self.fault == "die-after-claim" and jobs:
            os.kill(os.getpid(), signal.SIGKILL)
        for job in jobs:
            self._start(job)
        if len(jobs) < asked:
            if self.opts.burst and not jobs and not self.slots and not self.unsent and self._burst_done(now):
                return
            self._go_idle(now)
        else:
            self.want_claim = True

    def _burst_done(self, now: float) -> bool:
        """Burst mode with nothing to claim: stop (saying what is left) unless a job becomes due
        within the burst window or an on-finish hook is due or running (see runtime/burst.py)."""
        from queuectl.runtime import burst

        try:
            left = burst.leftover(self.store, self.opts.queues)
            if left.due_within(now) or self.housekeeper.busy() or burst.hooks_pending(self.store):
                return False
        except StoreCorrupt:
            raise
        except QueuectlError:
            return False  # cannot tell (an outage): keep going, as a worker does
        self.request_stop(f"burst mode: nothing more to run now; {left.describe(now)}")
        return True

    def _go_idle(self, now: float) -> None:
        """Nothing to claim: sleep until woken, the poll interval, or the next delayed job."""
        self.want_claim = False
        wait = self.config.poll_interval
        try:
            due = self.store.next_due(self.opts.queues)
        except StoreCorrupt:
            raise
        except QueuectlError:
            due = None
        # a damaged or foreign row can hold any type (SQLite columns are not typed): poll instead
        if isinstance(due, (int, float)) and not isinstance(due, bool) and due > now:
            wait = min(wait, due - now + 0.001)
        slot = self.store.next_slot()  # a queue's rate held jobs back: claim again once it has room
        if slot is not None and slot > now:
            wait = min(wait, slot - now + 0.001)
        self.idle_until = time.monotonic() + wait

    def _start(self, job: Job) -> None:
        lease = Lease(job.id, self.id, job.attempts)
        slot = Slot(job, lease, None)
        env = {**self.job_env, **job.env} if job.env else self.job_env  # as job_environment() gives
        slot.started_at = self.store.now()
        try:
            limit = output_limit_for(self.config, self.store.output_budget)
            slot.run = Run(job.command, job.cwd, env, limit=limit, progress=True)
            if self.spool_dir is not None:
                slot.run.spool = SpoolWriter(self.spool_dir, job.id, job.attempts)
        except StartError as exc:
            slot.start_error = str(exc)
            if exc.out_of_resources:
                self._short_of_resources(slot)
        else:
            self.starved_starts = 0
            self.selector.register(slot.run, selectors.EVENT_READ, slot.run)
            if job.timeout:
                slot.deadline = time.monotonic() + job.timeout
        self.slots[job.id] = slot
        if self.log_jobs:
            self.job_queues[job.id] = job.queue
            if slot.run is not None and self.log_starts:
                started = f"job {job.id} started (attempt {job.attempts})"
                labels = job.labels or None
                log(self.id, started, "job_started", job.id, queue=job.queue, attempt=job.attempts, labels=labels)

    def _short_of_resources(self, slot: Slot) -> None:
        """The worker, not the job, ran out (EMFILE, ENFILE, EAGAIN): hand the job back uncounted
        and hold no more jobs than run now, until one of them ends and gives its descriptors back."""
        slot.handed_back = True
        running = sum(1 for other in self.slots.values() if other.run is not None)
        if self.claim_cap is None or running < self.claim_cap:
            log(
                self.id,
                f"cannot start job {slot.job.id} ({slot.start_error}): handing it back; "
                f"holding at most {max(1, running)} job(s) until one ends",
            )
        self.claim_cap = running
        self.claim_after = time.monotonic() + SHORT_OF_RESOURCES_BACKOFF_S
        self.starved_starts = self.starved_starts + 1 if running == 0 else 0
        if self.starved_starts >= STARVED_STARTS_GIVE_UP and self.gave_up is None:
            # not even one job at a time: handing jobs back forever would hide it, so stop (the
            # job is back in the queue for other workers) and say what to change
            self.gave_up = (
                f"cannot start any job ({slot.start_error}): raise the limit (ulimit -n, ulimit -u) "
                "or lower --concurrency"
            )
            self.request_stop("out of resources")

    # --- watching runs ----------------------------------------------------------------------

    def _wait_seconds(self, next_beat: float) -> float:
        mono = time.monotonic()
        moments = [next_beat]
        if not self.stopping and len(self.slots) < self._claim_limit():
            moments.append(max(self.claim_after, mono if self.want_claim else self.idle_until))
        if self.unsent:
            moments.append(self.next_write_try)
        if self.stopping and self.grace_deadline is not None and self.grace_deadline > mono:
            moments.append(self.grace_deadline)  # once passed, a stopping worker waiting out an outage must not spin
        moments.append(self.housekeeper.next_moment(self.stopping))
        if sorted(self.slots) != self.published_jobs:
            moments.append(self.next_publish)
        for slot in self.slots.values():
            if slot.start_error is not None:
                moments.append(mono)
            moments.extend(t for t in (slot.deadline, slot.kill_at) if t is not None)
        return max(0.0, min(moments) - mono)

    def _reap(self) -> None:
        for job_id, slot in list(self.slots.items()):
            if slot.run is not None:
                code = slot.run.poll()
                if code is None:
                    continue
                self._read_output(slot.run)
                if not slot.run.eof:  # a background process still holds the pipe: stop watching it
                    self.selector.unregister(slot.run)
                slot.run.finish()
                if self.claim_cap is not None:  # its descriptors are free again: try one more
                    self.claim_cap += 1
                    if self.claim_cap >= self.opts.concurrency:
                        self.claim_cap = None
            else:
                code = None
            del self.slots[job_id]
            outcome = outcome_of(slot, code, self.config, self.store.now(), self.host)
            if outcome is not None:
                if self.fault == "die-before-record":
                    os.kill(os.getpid(), signal.SIGKILL)
                self.unsent.append((slot.lease, outcome))
                self.next_write_try = 0.0
            self.want_claim = True

    def _read_output(self, run: Run) -> None:
        """Read what a job wrote; at end of file stop watching its pipe (an EOF is always readable)."""
        if run.eof:
            return
        run.read()
        if run.eof:
            self.selector.unregister(run)

    def _stop_run(self, slot: Slot, reason: str, mono: float) -> None:
        slot.stop_reason = reason
        if slot.run is not None:
            slot.run.signal(signal.SIGTERM)
            slot.kill_at = mono + self.config.kill_grace

    def _enforce_deadlines(self) -> None:
        if self.store_down:
            self._kill_if_leases_may_lapse()  # between failing heartbeats too
        mono = time.monotonic()
        shutdown_due = self.stopping and self.grace_deadline is not None and mono >= self.grace_deadline
        for slot in self.slots.values():
            if slot.run is None:
                continue
            if slot.kill_at is not None and mono >= slot.kill_at:
                slot.run.signal(signal.SIGKILL)
                slot.kill_at = None
            elif slot.stop_reason is None:
                if slot.deadline is not None and mono >= slot.deadline:
                    log(
                        self.id,
                        f"job {slot.job.id} timed out after {slot.job.timeout:g}s",
                        "job_timed_out",
                        slot.job.id,
                    )
                    self._stop_run(slot, "timeout", mono)
                elif shutdown_due:
                    self._stop_run(slot, "shutdown", mono)

    # --- talking to the store ---------------------------------------------------------------

    def _publish_jobs(self) -> None:
        """Show the jobs we run in our registry row as soon as they change (at most every
        PUBLISH_EVERY_S), so that ``worker list`` and the dashboard never lag them by a heartbeat."""
        current = sorted(self.slots)
        mono = time.monotonic()
        if current == self.published_jobs or mono < self.next_publish:
            return
        self.next_publish = mono + PUBLISH_EVERY_S
        try:
            show_current_jobs(self.store, self.id, current)
        except STORE_DOWN:
            self.next_publish = mono + self.config.heartbeat  # an outage: the heartbeat tries again
            return
        self.published_jobs = current

    def _send_outcomes(self) -> None:
        """Write finished attempts; on an outage keep them and retry (fenced: at most once)."""
        if not self.unsent or time.monotonic() < self.next_write_try:
            return
        # the busy path: record every finished attempt and claim the next jobs in one round trip
        free = 0 if self.stopping else max(0, self._claim_limit() - len(self.slots))
        if time.monotonic() < self.claim_after:
            free = 0
        now = self.store.now()
        batch = list(self.unsent)
        try:
            written, jobs = lifecycle.finish_and_claim(
                self.store, batch, self.id, self.opts.queues, now, self.config.lease, free
            )
        except STORE_DOWN as exc:
            log(self.id, f"cannot record {len(batch)} outcome(s) yet ({exc}); will retry")
            self._writes_refused(exc)
            self.next_write_try = time.monotonic() + _RETRY_WRITE_S
            return
        del self.unsent[: len(batch)]
        self._writes_accepted()
        for (lease, outcome), ok in zip(batch, written, strict=True):
            queue = self.job_queues.pop(lease.job_id, None) if self.log_jobs else None
            if ok and self.log_jobs:  # a first user sees that the job ran, and how it ended
                self._log_finished(lease, outcome, now, queue)
            if not ok:
                log(
                    self.id,
                    f"job {lease.job_id}: lease lost before its outcome was written",
                    "lease_lost",
                    lease.job_id,
                )
            elif outcome.state == PENDING and outcome.attempts is not None:
                try:
                    self.store.notify()  # handed back: another worker may take it now
                except OSError:
                    pass  # a wake-up is a courtesy (short of descriptors, say): they poll anyway
        if free:
            self._take(jobs, free, now)

    def _log_finished(self, lease: Lease, outcome: Outcome, now: float, queue: str | None) -> None:
        """The record of a written outcome: its line for people, its facts for machines."""
        retry_in = round(max(0.0, outcome.run_at - now), 3) if outcome.state == "failed" and outcome.run_at else None
        log(
            self.id,
            finished_line(lease.job_id, outcome, now),
            "job_finished",
            lease.job_id,
            state="handed back" if outcome.state == PENDING else outcome.state,
            exit_code=outcome.exit_code,
            duration=round(outcome.duration, 6) if outcome.duration is not None else None,
            queue=queue,
            attempt=lease.attempt,
            error=outcome.last_error.splitlines()[0] if outcome.last_error else None,
            retry_in=retry_in,
        )


def _say(text: str, worker_id: str) -> None:
    """Why the worker exits: the one plain line on stderr, or a record in a JSON log."""
    if loglines.current_format() == "json":
        loglines.emit(worker_id, "error", text)
    else:
        print(text, file=sys.stderr)


def _arguments(argv: list[str]) -> dict[str, str]:
    """The supervisor's command line for us: ``--queue Q --concurrency N --id ID --nonce HEX --scale R
    --burst`` (``--nonce``: our id's random part, so that our supervisor knows our id). Not argparse:
    it and gettext cost 0.4 MB in every idle worker, for a line only queuectl writes."""
    args: dict[str, str] = {}
    words = iter(argv)
    for word in words:
        name, _, value = word.partition("=")
        if name == "--burst" and not value:
            args[name] = ""
        elif name in ("--queue", "--concurrency", "--id", "--nonce", "--scale"):
            args[name] = value if value else next(words, "")
        else:
            raise ValueError(f"unknown argument {word!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _arguments(sys.argv[1:] if argv is None else argv)
        concurrency = int(args.get("--concurrency", "1"))
    except ValueError as exc:
        print(f"python -m queuectl.runtime.worker: {exc}", file=sys.stderr)
        return 2
    loglines.set_format(os.environ.pop(loglines.ENV_LOG_FORMAT, "text"))  # not in our jobs' environment
    queues = [q for q in args.get("--queue", "").split(",") if q] or None
    options = WorkerOptions(
        queues=queues, concurrency=max(1, concurrency), burst="--burst" in args, scale=args.get("--scale", "")
    )
    if args.get("--nonce"):
        options.worker_id = worker_id_for(os.getpid(), args["--nonce"])
    if args.get("--id"):
        options.worker_id = args["--id"]
    # under a supervisor the URL comes on a pipe: in our environment any job could read it
    # from /proc/$PPID/environ
    from queuectl.runtime.urlpipe import read_url_fd

    url = read_url_fd()
    from queuectl.runtime.orphans import adopt_orphans

    adopt_orphans()  # a job's setsid children are re-parented to us, and killed when the job ends
    fault = os.environ.get(FAULT_ENV, "")
    if fault.startswith("exit-corrupt"):
        if fault == "exit-corrupt":
            return EXIT_CORRUPT
        trigger = fault.partition(":")[2]  # exit-corrupt:<file>: the one worker that removes it exits

        def watch() -> None:
            while True:
                try:
                    os.unlink(trigger)
                except OSError:
                    time.sleep(0.05)
                else:
                    os._exit(EXIT_CORRUPT)

        import threading

        threading.Thread(target=watch, daemon=True).start()
    try:
        store = open_store(url or os.environ.get(ENV_DB) or resolve_db_url())
        return Worker(store, options).run()
    except QueuectlError as exc:
        _say(f"queuectl worker: {exc}", options.worker_id)
        return EXIT_CORRUPT if isinstance(exc, StoreCorrupt) else exc.exit_code  # corrupt: no restart


if __name__ == "__main__":
    sys.exit(main())
