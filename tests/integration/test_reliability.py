"""Reliability under faults: real worker processes, real signals, a real SQLite file per test.

Every job here is a ledger job (see ``ledger.py``): it records its own start and end, so after each
test :func:`check_invariants` can compare what really ran with what the store says (I1 everything
finished, I2 no concurrent or repeated run without a revoked lease, I3 store and ledger agree).

Runtime settings are written with ``service.set_config`` in the test process: the function
``queuectl config set`` calls, with the same validation, without a CLI start-up per key. The CLI
itself is exercised where the test is about the CLI (many writers, bad input, security).
Workers are started either under the supervisor (``queuectl worker start``, restarts crashed
workers, kills orphans) or directly (``python -m queuectl.runtime.worker``) when a test needs one process
it fully controls: a fault point, a SIGSTOP. All of them run in their own session and are killed
at teardown by the ``queue`` fixture.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from queuectl.core import lifecycle
from queuectl.service import config as config_service
from queuectl.service import jobs as service
from queuectl.service import workers as worker_service

from .conftest import Queue, pid_alive, wait_until
from .ledger import Report, Run, check_invariants, ledger_command, read_ledger

HEARTBEAT, LEASE = 0.2, 1.0


class Harness:
    """One test's queue plus its ledger, direct workers and settings."""

    def __init__(self, queue: Queue, root: Path) -> None:
        self.q = queue
        self.root = root
        self.ledger = root / "ledger"
        self.lease, self.heartbeat = 30.0, 5.0
        self.workers: list[subprocess.Popen[bytes]] = []

    def config(self, **values: Any) -> None:
        """Runtime keys in the order given (heartbeat before a shorter lease); as ``config set``."""
        for key, value in values.items():
            config_service.set_config(self.q.store, key.replace("_", "-"), str(value))
        current = config_service.load_config(self.q.store)
        self.lease, self.heartbeat = current.lease, current.heartbeat

    def fast(self, **extra: Any) -> None:
        self.config(heartbeat=HEARTBEAT, lease=LEASE, **extra)

    def job(self, job_id: str, body: str = "true", **fields: Any) -> str:
        spec = {"id": job_id, "command": ledger_command(self.ledger, job_id, body), **fields}
        assert service.enqueue(self.q.store, [spec]) == [job_id]
        return job_id

    def runs(self, job_id: str) -> list[Run]:
        per_job = read_ledger(self.ledger).get(job_id, {})
        return [per_job[n] for n in sorted(per_job)]

    def wait_run(self, job_id: str, number: int, timeout: float = 10, ended: bool = False) -> Run:
        def ready() -> Run | None:
            runs = self.runs(job_id)
            if len(runs) >= number and runs[number - 1].start is not None:
                if not ended or runs[number - 1].end is not None:
                    return runs[number - 1]
            return None

        return wait_until(
            ready,
            timeout,
            message=lambda: (
                f"run {number} of {job_id} {'ended' if ended else 'started'}; runs {self.runs(job_id)}\n{self.q.logs()}"
            ),
        )

    def worker(
        self, *args: str, fault: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``python -m queuectl.runtime.worker`` directly (no supervisor), in its own session."""
        log = self.root / f"worker-{len(self.workers)}.log"
        self.q.add_log(log)
        child_env = dict(env or self.q.env)
        if fault:
            child_env["QUEUECTL_TEST_FAULT"] = fault
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "queuectl.runtime.worker", *args],
                env=child_env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.workers.append(proc)
        self.q.supervisors.append(proc)  # killed (its group) at teardown if still running
        return proc

    def worker_id_of(self, pid: int) -> str:
        return wait_until(
            lambda: next((w.id for w in worker_service.list_workers(self.q.store) if w.pid == pid), None),
            10,
            message=lambda: f"worker {pid} registered\n{self.q.logs()}",
        )

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        proc.send_signal(signal.SIGTERM)
        assert self.q.wait_exit(proc, timeout) == 0

    def check(self, **kwargs: Any) -> Report:
        kwargs.setdefault("heartbeat", self.heartbeat)
        kwargs.setdefault("adopters", {p.pid for p in self.q.supervisors if p not in self.workers})
        return check_invariants(self.q.store, self.ledger, self.lease, **kwargs)


@pytest.fixture
def h(queue: Queue, tmp_path: Path) -> Harness:
    return Harness(queue, tmp_path)


def run_cli_concurrently(h: Harness, argvs: list[list[str]]) -> list[tuple[int, str, str]]:
    """Run ``queuectl ARGV`` for each argv in its own process, all released at the same instant.

    Each process is forked from this one with the CLI already imported and calls the console
    entry point (``queuectl.cli.main``) with its own stdout, stderr, environment and database
    connection: what ``queuectl ...`` does minus the ~0.4 s of interpreter start-up and imports,
    which would also spread the processes out instead of making them collide.
    Returns ``(exit code, stdout, stderr)`` per argv, in order.
    """
    from queuectl import cli

    gate_read, gate_write = os.pipe()
    children = []
    for index, argv in enumerate(argvs):
        out_path, err_path = h.root / f"cli-{index}.out", h.root / f"cli-{index}.err"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(gate_write)
                os.read(gate_read, 1)  # EOF once the parent closes the gate: all start together
                for fd, path in ((1, out_path), (2, err_path)):
                    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(target, fd)
                    os.close(target)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                os.environ.clear()
                os.environ.update(h.q.env)
                os.chdir(h.root)
                sys.argv = ["queuectl", *argv]
                try:
                    cli.main()
                    code = 0
                except SystemExit as exc:
                    if isinstance(exc.code, str):
                        print(exc.code, file=sys.stderr)
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        children.append((pid, out_path, err_path))
    os.close(gate_read)
    os.close(gate_write)
    results = []
    for pid, out_path, err_path in children:
        _, status = os.waitpid(pid, 0)
        results.append((os.waitstatus_to_exitcode(status), out_path.read_text(), err_path.read_text()))
    return results


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                members.append(int(entry))
    return members


def sup_children(sup_pid: int) -> list[int]:
    try:
        with open(f"/proc/{sup_pid}/task/{sup_pid}/children") as handle:
            return [int(pid) for pid in handle.read().split()]
    except OSError:
        return []


# --- fault points: the worker dies right after a claim, or right before recording ---------------


def test_die_after_claim_job_recovered_and_runs_once(h: Harness) -> None:
    h.fast(backoff_max=0)  # a recovered job is due again at once
    job_id = h.job("claimed-then-died")
    faulty = h.worker(fault="die-after-claim")
    assert faulty.wait(timeout=15) == -signal.SIGKILL, h.q.logs()

    held = h.q.job(job_id)
    assert held.state == "processing" and held.attempts == 1, held
    assert held.locked_by and held.locked_by.startswith(f"w{faulty.pid}-")
    assert h.runs(job_id) == [], "the faulty worker died before starting the command"

    healthy = h.worker()
    done = h.q.wait_state(job_id, "completed", 15)
    assert done.attempts == 2 and done.exit_code == 0 and done.last_error is None
    [run] = h.runs(job_id)
    assert run.succeeded and run.worker == healthy.pid
    # it waited for the dead worker's lease (claimed at most ~0.1 s before it died)
    assert run.start >= held.lease_expires_at - 0.05
    h.stop(healthy)
    h.check(revoked={faulty.pid: None})


def test_die_before_record_job_runs_exactly_once_more(h: Harness) -> None:
    h.fast(backoff_max=0)
    job_id = h.job("ran-then-died")
    faulty = h.worker(fault="die-before-record")
    assert faulty.wait(timeout=15) == -signal.SIGKILL, h.q.logs()

    [first] = h.runs(job_id)
    assert first.succeeded and first.worker == faulty.pid
    held = h.q.job(job_id)
    assert held.state == "processing" and held.attempts == 1 and held.exit_code is None

    healthy = h.worker()
    done = h.q.wait_state(job_id, "completed", 15)
    assert done.attempts == 2 and done.exit_code == 0
    first, second = h.runs(job_id)  # exactly one more run
    assert second.succeeded and second.worker == healthy.pid
    assert first.end is not None and second.start is not None  # both runs were recorded
    assert second.start - first.end >= LEASE - HEARTBEAT - 0.1, "re-run before the lease ran out"
    h.stop(healthy)
    report = h.check(revoked={faulty.pid: first.end})
    assert [(d.earlier.number, d.later.number, d.after_revoked) for d in report.duplicates] == [(1, 2, True)]


def test_poison_job_that_kills_its_worker_goes_dead_after_max_retries_plus_one(h: Harness) -> None:
    h.fast(backoff_max=0)
    job_id = h.job("poison", "kill -9 $PPID; sleep 30", max_retries=2)
    sup = h.q.start_workers(count=2)

    dead = h.q.wait_state(job_id, "dead", 30)
    assert dead.attempts == 3, dead
    assert "lease expired" in (dead.last_error or ""), dead.last_error
    runs = h.runs(job_id)
    assert len(runs) == 3, runs
    assert all(run.end is None for run in runs), "each run was killed with its worker"
    workers = {run.worker for run in runs}
    assert len(workers) == 3 and not any(pid_alive(p) for p in workers if p)
    assert sup.poll() is None and "restarting" in h.q.logs()
    h.stop(sup, 15)
    h.check(revoked={run.worker: run.start for run in runs if run.worker})


# --- fencing: a frozen worker whose job was taken over writes nothing -------------------------


def test_frozen_worker_loses_lease_kills_its_run_and_writes_nothing(h: Harness) -> None:
    h.fast(backoff_max=0)
    job_id = h.job(
        "fenced", 'if [ "$ql_run" = 1 ]; then echo first-run-output; sleep 30; else echo second-run-output; sleep 1; fi'
    )
    first_worker = h.worker()
    first = h.wait_run(job_id, 1)
    first_pid = first.pid
    assert first_pid is not None  # wait_run returns a started run
    assert first.worker == first_worker.pid
    wait_until(
        lambda: "first-run-output" in (h.q.job(job_id).output or ""),
        5,
        message="the first run's output saved by a heartbeat",
    )

    frozen_at = time.time()
    os.kill(first_worker.pid, signal.SIGSTOP)
    wait_until(lambda: h.q.job(job_id).lease_expires_at < time.time(), 5, message="lease expired")
    recovered = lifecycle.recover_expired(h.q.store, config_service.load_config(h.q.store), time.time())
    assert recovered == [job_id]
    assert h.q.job(job_id).state == "failed"

    second_worker = h.worker()
    second = h.wait_run(job_id, 2)
    assert second.worker == second_worker.pid
    assert pid_alive(first_pid), "the first run goes on while its worker is frozen"
    before = h.q.job(job_id)
    assert before.state == "processing" and before.attempts == 2
    assert before.locked_by and before.locked_by.startswith(f"w{second_worker.pid}-")

    resumed_at = time.monotonic()
    os.kill(first_worker.pid, signal.SIGCONT)
    wait_until(
        lambda: not pid_alive(first_pid), 2, message=lambda: f"first run {first_pid} killed after SIGCONT\n{h.q.logs()}"
    )
    killed_after = time.monotonic() - resumed_at
    assert killed_after < 1.0, f"the first run lived {killed_after:.2f}s after its worker resumed"
    wait_until(lambda: "lost the lease" in h.q.logs(), 3, message="the first worker logged the loss")
    after = h.q.job(job_id)
    for name in (
        "state",
        "attempts",
        "locked_by",
        "exit_code",
        "last_error",
        "updated_at",
        "started_at",
        "finished_at",
    ):
        assert getattr(after, name) == getattr(before, name), f"{name} changed by the fenced worker"

    done = h.q.wait_state(job_id, "completed", 10)
    assert done.attempts == 2 and done.exit_code == 0 and done.last_error is None
    assert "second-run-output" in done.output and "first-run-output" not in done.output
    assert h.runs(job_id)[0].end is None, "the first run was killed, never finished"
    h.stop(first_worker)
    h.stop(second_worker)
    report = h.check(revoked={first_worker.pid: frozen_at})
    assert [d.later.number for d in report.duplicates] == [2]


def test_frozen_worker_whose_run_succeeded_meanwhile_cannot_overturn_the_second_run(h: Harness) -> None:
    """The first run succeeds while its worker is frozen; the second run fails for good. On
    resuming, the first worker reaps a success it must not record: the job stays dead."""
    h.fast(backoff_max=0)
    job_id = h.job("overturn", 'if [ "$ql_run" = 1 ]; then sleep 1.5; exit 0; fi; sleep 0.5; exit 3', max_retries=1)
    first_worker = h.worker()
    first = h.wait_run(job_id, 1)
    frozen_at = time.time()
    os.kill(first_worker.pid, signal.SIGSTOP)
    wait_until(lambda: h.q.job(job_id).lease_expires_at < time.time(), 5, message="lease expired")
    assert lifecycle.recover_expired(h.q.store, config_service.load_config(h.q.store), time.time()) == [job_id]
    first = h.wait_run(job_id, 1, ended=True)
    assert first.succeeded, "the first run finished while its worker was frozen"

    second_worker = h.worker()
    h.wait_run(job_id, 2)
    first_id = h.worker_id_of(first_worker.pid)
    resumed_at = time.time()
    os.kill(first_worker.pid, signal.SIGCONT)  # it reaps exit 0 for an attempt it no longer holds
    seen = []
    while (job := h.q.job(job_id)).state == "processing":
        seen.append((job.state, job.exit_code))
        time.sleep(0.02)
    assert job.state == "dead" and job.attempts == 2 and job.exit_code == 3, job
    assert job.last_error == "exit code 3"
    assert all(code is None for _, code in seen), seen
    # it has been beating again since (and dropped the stale outcome: silently, as its slot is gone)
    wait_until(
        lambda: any(
            w.id == first_id and w.last_heartbeat > resumed_at + 2 * HEARTBEAT
            for w in worker_service.list_workers(h.q.store)
        ),
        5,
        message="the first worker resumed",
    )
    assert h.q.job(job_id) == job, "the resumed worker changed the job"
    h.stop(first_worker)
    h.stop(second_worker)
    report = h.check(revoked={first_worker.pid: frozen_at})
    assert [(d.earlier.number, d.overlapping) for d in report.duplicates] == [(1, False)]


# --- orphans: a worker SIGKILLed mid-job under the supervisor ---------------------------------


def test_sigkilled_worker_orphan_is_killed_and_job_completes(h: Harness) -> None:
    h.fast(backoff_max=0)
    job_id = h.job("orphaned", 'if [ "$ql_run" = 1 ]; then sleep 30 & wait; fi')
    sup = h.q.start_workers(count=1)
    first = h.wait_run(job_id, 1)
    group = first.pid
    assert group is not None  # wait_run returns a started run
    assert first.worker in sup_children(sup.pid)

    killed_at = time.time()
    os.kill(first.worker, signal.SIGKILL)
    wait_until(lambda: not group_members(group), 1.0, message=lambda: f"orphaned job group {group} gone\n{h.q.logs()}")
    assert not group_members(group), "the job's background child outlived the kill"

    done = h.q.wait_state(job_id, "completed", 15)
    assert done.attempts == 2
    first, second = h.runs(job_id)
    assert first.end is None and second.succeeded and second.worker != first.worker
    assert "orphaned" in h.q.logs() and "restarting" in h.q.logs()
    h.stop(sup, 15)
    h.check(revoked={first.worker: killed_at})


# --- shutdown -----------------------------------------------------------------------------------


def test_sigterm_claims_nothing_new_and_requeues_after_grace(h: Harness) -> None:
    h.fast(shutdown_grace=0.5)
    long_id = h.job("long", 'if [ "$ql_run" = 1 ]; then sleep 30; fi')
    sup = h.q.start_workers("--concurrency", "2", count=1)
    h.wait_run(long_id, 1)

    sup.send_signal(signal.SIGTERM)
    signalled = time.time()
    # once the worker has it (the supervisor forwards it at once), nothing is claimed
    wait_until(lambda: "stopping (signal)" in h.q.logs(), 2, message="SIGTERM reached the worker")
    later_id = h.job("enqueued-after-sigterm")  # wakes the worker, which has a free slot
    assert h.q.wait_exit(sup, 8) == 0
    took = time.time() - signalled
    assert 0.4 <= took < 5, f"stopped {took:.2f}s after SIGTERM with a 0.5 s grace"

    [run] = h.runs(long_id)
    assert run.status == "term" and run.end is not None and run.end - signalled >= 0.45, (
        "the job was stopped before its grace"
    )
    job = h.q.job(long_id)
    assert job.state == "pending" and job.attempts == 0, job
    assert "shutdown" in (job.last_error or "")
    later = h.q.job(later_id)
    assert later.state == "pending" and later.attempts == 0 and h.runs(later_id) == []

    sup = h.q.start_workers("--concurrency", "2", count=1)  # both run to completion now
    assert h.q.wait_state(long_id, "completed", 10).attempts == 1
    assert h.q.wait_state(later_id, "completed", 10).attempts == 1
    h.stop(sup)
    h.check()


def test_sigterm_reaches_the_workers_promptly(h: Harness) -> None:
    """Regression: the supervisor used to sleep in time.sleep(0.2), which a signal does not cut
    short (PEP 475), so SIGTERM reached the workers up to 0.2 s late and they went on claiming.
    Three supervisors (independent phases); a job enqueued 0.1 s after SIGTERM is never claimed."""
    h.fast()
    sups = [h.q.start_workers(count=1) for _ in range(3)]
    for sup in sups:
        sup.send_signal(signal.SIGTERM)
    signalled = time.time()
    time.sleep(0.1)
    late = [h.job(f"after-sigterm-{n}") for n in range(3)]
    for sup in sups:
        assert h.q.wait_exit(sup, 10) == 0
    claimed = {job_id: h.q.job(job_id).started_at for job_id in late}
    sup = h.q.start_workers(count=1)
    for job_id in late:
        h.q.wait_state(job_id, "completed", 10)
    h.stop(sup)
    h.check()
    assert not [j for j, started in claimed.items() if started is not None], (
        f"claimed after SIGTERM was sent at {signalled:.3f}: {claimed}"
    )


def test_second_sigterm_takes_the_fast_path(h: Harness) -> None:
    h.fast(shutdown_grace=30)
    job_id = h.job("hurried", 'if [ "$ql_run" = 1 ]; then sleep 30; fi')
    sup = h.q.start_workers(count=1)
    run = h.wait_run(job_id, 1)

    sup.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in h.q.logs(), 5, message="first SIGTERM forwarded")
    time.sleep(0.3)
    assert run.pid is not None  # wait_run returns a started run
    assert sup.poll() is None and pid_alive(run.pid), "the first SIGTERM must let the job run on"

    second_at = time.time()
    sup.send_signal(signal.SIGTERM)
    assert h.q.wait_exit(sup, 5) == 0
    took = time.time() - second_at
    assert took < 1.5, f"the second SIGTERM took {took:.2f}s"
    [run] = h.runs(job_id)
    assert run.status == "term" and run.end is not None and run.end - second_at < 1.0
    job = h.q.job(job_id)
    assert job.state == "pending" and job.attempts == 0, job

    sup = h.q.start_workers(count=1)
    assert h.q.wait_state(job_id, "completed", 10).attempts == 1
    h.stop(sup)
    h.check()


# --- a store outage (the write lock held elsewhere) shorter than a lease ------------------------


def test_write_lock_shorter_than_lease_outcome_written_once_released(h: Harness) -> None:
    """Observed: the store's busy timeout is 30 s, so nothing fails: the worker's writes (heartbeat,
    then the outcome) simply wait for the lock, and the outcome lands once, right after release."""
    h.config(heartbeat=0.2, lease=2, backoff_max=0)
    go = h.root / "go"
    job_id = h.job("through-outage", f"while [ ! -e {go} ]; do sleep 0.02; done")
    worker = h.worker()
    h.wait_run(job_id, 1)

    blocker = sqlite3.connect(h.q.db_path, timeout=5, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        locked_at = time.time()
        go.touch()
        run = h.wait_run(job_id, 1, timeout=0.5, ended=True)
        assert run.end is not None  # ended=True waits for the end line
        time.sleep(max(0.0, locked_at + 0.6 - time.time()))
        held = h.q.job(job_id)  # WAL: readers still read during the outage
        released_at = time.time()
        blocker.execute("COMMIT")
    finally:
        blocker.close()
    assert run.end < released_at
    assert held.state == "processing", "the outcome was written while the lock was held"

    done = h.q.wait_state(job_id, "completed", 1.0)  # written within a second of the release
    # finished_at is when the job ended (the outcome was made then), not when it could be written
    assert run.end <= done.finished_at < released_at
    assert done.attempts == 1 and done.exit_code == 0
    assert len(h.runs(job_id)) == 1
    log = h.q.logs()
    assert "heartbeat failed" not in log and "cannot record" not in log and "lost the lease" not in log
    h.stop(worker)
    h.check()


# --- many writers on one SQLite file ------------------------------------------------------------


def test_many_concurrent_writers_never_see_database_locked(h: Harness) -> None:
    h.fast()
    sup = h.q.start_workers("--concurrency", "2", count=4)
    argvs = []
    for n in range(20):
        specs = [{"id": f"w{n:02d}-{k}", "command": ledger_command(h.ledger, f"w{n:02d}-{k}")} for k in range(10)]
        path = h.root / f"jobs-{n:02d}.jsonl"
        path.write_text("".join(json.dumps(spec) + "\n" for spec in specs))
        argvs.append(["enqueue", "--file", str(path)])
    results = run_cli_concurrently(h, argvs)
    assert [code for code, _, _ in results] == [0] * 20, results
    assert all(re.fullmatch(r"queuectl: enqueued 10 job\(s\) as batch .*\n", err) for _, _, err in results), results
    assert all(len(out.splitlines()) == 10 for _, out, _ in results), results

    wait_until(
        lambda: h.q.counts().get("completed", 0) == 200,
        40,
        message=lambda: f"200 completed, {h.q.counts()}\n{h.q.logs()}",
    )
    h.stop(sup, 15)
    assert "locked" not in h.q.logs().lower()
    report = h.check()
    assert report.runs == 200 and not report.duplicates


# --- hostile output -----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def test_flood_of_output_keeps_worker_small_and_tail_bounded(h: Harness) -> None:
    h.fast()
    flood = h.job("flood", "head -c 100000000 /dev/zero & head -c 100000000 /dev/urandom >&2; wait")
    odd = h.job("odd-bytes", r"printf '\377\376\000abc'")  # dash's printf: octal escapes
    worker = h.worker()
    h.worker_id_of(worker.pid)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_kib(worker.pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        done = h.q.wait_state(flood, "completed", 60)
    finally:
        stop.set()
        sampler.join()
    assert len(samples) > 10
    assert max(samples) < 100 * 1024, f"worker RSS peaked at {max(samples) // 1024} MiB"
    match = re.match(r"\[\.\.\. (\d+) earlier bytes of output dropped \.\.\.\]\n", done.output)
    assert match, done.output[:100]
    # 200 MB written, at most 64 KiB kept (fewer when replacement characters made the text grow)
    assert 200_000_000 - 64 * 1024 <= int(match.group(1)) < 200_000_000, match.group(0)
    assert len(done.output.encode()) <= 64 * 1024 + len(match.group(0))

    odd_job = h.q.wait_state(odd, "completed", 10)
    assert odd_job.output == "\ufffd\ufffd\\0abc"
    shown = h.q.cli("show", "--json", odd)
    assert json.loads(shown.stdout)["output"] == "\ufffd\ufffd\\0abc"
    assert h.q.cli("show", odd).returncode == 0
    h.stop(worker)
    h.check()


def test_stored_output_tail_is_at_most_about_70_kb_for_any_bytes(h: Harness) -> None:
    h.fast()
    zeros = h.job("zeros", "head -c 200000 /dev/zero")
    noise = h.job("noise", "head -c 200000 /dev/urandom")
    worker = h.worker("--burst")
    assert worker.wait(timeout=20) == 0
    h.check()
    # regression: the 64 KiB kept used to be expanded after the cut (a NUL became 2 characters,
    # an invalid byte 3 bytes of U+FFFD): 131 KB stored for zeros, ~120 KB for random bytes
    sizes = {job_id: len(h.q.job(job_id).output.encode()) for job_id in (zeros, noise)}
    assert all(size <= 70_000 for size in sizes.values()), f"stored output sizes: {sizes}"
    assert h.q.job(zeros).output.endswith("\\0" * 1000)


# --- bad input ----------------------------------------------------------------------------------


def test_fifty_concurrent_dlq_retries_exactly_one_wins(h: Harness) -> None:
    h.fast()
    job_id = h.job("to-the-dlq", "exit 1", max_retries=0)
    assert h.worker("--burst").wait(timeout=15) == 0
    assert h.q.state(job_id) == "dead"

    results = run_cli_concurrently(h, [["dlq", "retry", job_id]] * 50)
    codes = sorted(code for code, _, _ in results)
    assert codes == [0] + [4] * 49, codes
    [(_, winner_out, winner_err)] = [r for r in results if r[0] == 0]
    assert winner_out.strip() == f"requeued {job_id}" and winner_err == ""
    for code, out, err in results:
        if code == 4:
            assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert err.startswith("queuectl: error: ") and "not in the dead letter queue" in err, err
    job = h.q.job(job_id)
    assert job.state == "pending" and job.attempts == 0

    assert h.worker("--burst").wait(timeout=15) == 0  # and dead again, for I1
    assert len(h.runs(job_id)) == 2
    h.check(attempts_reset={job_id})


def test_absurd_numbers_are_refused_with_one_line_naming_the_value(h: Harness) -> None:
    cases = [  # (arguments, text the one-line error must name)
        (("config", "set", "lease", "1e309"), "1e309"),
        (("enqueue", "true", "--max-retries", "-1"), "-1"),
        (("config", "set", "heartbeat", "100"), "100"),  # the lease is 30 s
        (("config", "set", "lease", "nan"), "nan"),
        (("config", "set", "backoff-base", "1e309"), "1e309"),
        (("config", "set", "max-retries", "99999999999999999999"), "99999999999999999999"),
        (("config", "set", "kill-grace", "99999999999999999999999"), "99999999999999999999999"),
        (("config", "set", "poll-interval", "0"), "0"),
        (("enqueue", "true", "--priority", "99999999999999999999"), "99999999999999999999"),
        (("enqueue", "true", "--delay", "99999999999999999999d"), "99999999999999999999d"),
        (("enqueue", "true", "--timeout", "1e309"), "1e309"),
        (("enqueue", '{"command": "true", "max_retries": 1e309}'), "inf"),
        (("enqueue", '{"command": "true", "priority": NaN}'), "nan"),
    ]
    before = config_service.config_values(h.q.store)
    forked = run_cli_concurrently(h, [list(args) for args, _ in cases])
    real = [
        subprocess.Popen(
            [sys.executable, "-m", "queuectl", *args],
            env=h.q.env,
            cwd=h.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _ in cases[:3]
    ]
    finished = [(proc.wait(timeout=30), *proc.communicate()) for proc in real]  # the real thing too
    for (args, named), (code, out, err) in zip(cases + cases[:3], forked + finished, strict=True):
        described = f"queuectl {' '.join(args)} -> {code}\n{out}{err}"
        assert code == 2, described
        assert out == "" and "Traceback" not in err, described
        assert len(err.splitlines()) == 1 and err.startswith("queuectl: error: "), described
        assert named in err, described
    assert config_service.config_values(h.q.store) == before
    assert h.q.counts() == {}
    h.check()


# --- security -----------------------------------------------------------------------------------


def test_jobs_never_see_queuectl_variables(h: Harness) -> None:
    h.fast()
    env_file = h.root / "job-env.txt"
    job_id = h.job("env-dump", f"env > {env_file}")
    h.q.env["QUEUECTL_SECRET_TOKEN"] = "s3cret-token-value"  # any QUEUECTL_ variable, not just the URL
    sup = h.q.start_workers(count=1)
    h.q.wait_state(job_id, "completed", 10)
    text = env_file.read_text()
    names = [line.split("=", 1)[0] for line in text.splitlines() if "=" in line]
    assert not [name for name in names if name.startswith("QUEUECTL_") and name != "QUEUECTL_PROGRESS_FD"], names
    assert str(h.q.db_path) not in text and "s3cret-token-value" not in text
    for pid in sup_children(sup.pid):  # the URL reaches workers in their environment only
        assert str(h.q.db_path).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    h.stop(sup)
    h.check()


def test_default_database_is_private_and_unsafe_modes_are_refused(h: Harness, tmp_path: Path) -> None:
    data = tmp_path / "xdg"
    env = {key: value for key, value in h.q.env.items() if not key.startswith("QUEUECTL_")}
    env["XDG_DATA_HOME"] = str(data)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queuectl", *args],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )

    old_umask = os.umask(0)  # the modes must not depend on a lax umask
    try:
        created = run("enqueue", "true")
    finally:
        os.umask(old_umask)
    assert created.returncode == 0, created.stderr
    folder, db = data / "queuectl", data / "queuectl" / "queue.db"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for sidecar in (db.with_name("queue.db-wal"), db.with_name("queue.db-shm")):
        if sidecar.exists():
            assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar

    for mode in (0o666, 0o620):
        db.chmod(mode)
        refused = run("status")
        assert refused.returncode == 5, refused
        assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "chmod 600" in refused.stderr and "Traceback" not in refused.stderr
        worker = subprocess.run(
            [sys.executable, "-m", "queuectl.runtime.worker"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert worker.returncode == 5 and "chmod 600" in worker.stderr, worker
    db.chmod(0o600)
    h.check()
