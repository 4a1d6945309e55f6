"""Real workers on the real PostgreSQL server, through faults, checked against the ledger's
invariants I1-I3 (tests/integration/ledger.py): a stress run with random worker SIGKILLs, the
server restarted twice during a drain, a network partition longer than a lease, and two "hosts"
(supervisors with different host names) sharing the queue.

Skipped without ``QUEUECTL_TEST_POSTGRES_URL`` (failed in CI): see tests/pgserver.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pgserver import POSTGRES_DIR_ENV, fresh_schema, postgres_url

from queuectl.core.errors import StoreUnavailable
from queuectl.core.models import COMPLETED
from queuectl.service import jobs as service
from queuectl.service import workers as worker_service

from .conftest import Queue, wait_until
from .ledger import check_invariants, ledger_command, read_ledger
from .tcpproxy import TcpProxy

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT = 0.3
LEASE = 3.0


def enqueue_ledger_jobs(q: Queue, ledger: Path, count: int, body: str) -> list[str]:
    ids = [f"j{n:03d}" for n in range(count)]
    specs = [{"id": job_id, "command": ledger_command(ledger, job_id, body), "max_retries": 20} for job_id in ids]
    assert service.enqueue(q.store, specs) == ids
    return ids


def completed(q: Queue) -> int:
    """Completed jobs; -1 while the test's own connection is down (the first read after a
    restart fails on the connection the restart closed, the next one reconnects)."""
    try:
        return q.counts().get(COMPLETED, 0)
    except StoreUnavailable:
        return -1


def wait_drained(q: Queue, count: int, timeout: float) -> None:
    wait_until(lambda: completed(q) == count, timeout, interval=0.2, message=lambda: f"{count} completed: {q.counts()}")


def stop_all(q: Queue) -> None:
    for proc in q.supervisors:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in q.supervisors:
        assert q.wait_exit(proc, 30) == 0, q.logs()


def test_stress_run_with_worker_kills_keeps_invariants() -> None:
    jobs = os.environ.get("QUEUECTL_TEST_PG_STRESS_JOBS", "1000")
    with fresh_schema(postgres_url()) as url:
        proc = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "stress.py"), "--db", url, "--jobs", jobs]
            + ["--workers", "4", "--concurrency", "2", "--kill-every", "1", "--seed", "17", "--timeout", "240"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
    described = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, described
    assert "invariants I1-I3: OK" in proc.stdout, described
    assert f'"completed": {jobs}' in proc.stdout, described
    assert '"kills": 0' not in proc.stdout, described
    password = urlsplit(postgres_url()).password
    assert not password or password not in proc.stdout + proc.stderr, "the password was printed"


def test_server_restarted_twice_during_a_drain_loses_nothing(pg_queue: Queue, tmp_path: Path) -> None:
    server_dir = os.environ.get(POSTGRES_DIR_ENV)
    if not server_dir:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{POSTGRES_DIR_ENV} is not set in CI", pytrace=False)
        pytest.skip(f"{POSTGRES_DIR_ENV} not set: the server cannot be restarted")
    q = pg_queue
    q.config(heartbeat=HEARTBEAT, lease=LEASE)
    ledger = tmp_path / "ledger"
    ids = enqueue_ledger_jobs(q, ledger, 80, "sleep 0.1")
    q.start_workers("--concurrency", "2", count=2)
    q.start_workers("--concurrency", "2", count=2)

    for done in (15, 45):
        wait_until(partial(lambda n: completed(q) >= n, done), 60, interval=0.1, message=f"{done} completed")
        subprocess.run([str(REPO / "scripts" / "pg_test_server.sh"), "restart", server_dir], check=True, timeout=60)

    wait_drained(q, len(ids), 120)
    assert "cannot" in q.logs() or "failed" in q.logs(), "the restarts were not noticed: the test proved nothing"
    stop_all(q)
    # nothing lost, nothing run twice while its first lease was live (no worker was revoked)
    check_invariants(q.store, ledger, LEASE, heartbeat=HEARTBEAT, adopters={p.pid for p in q.supervisors})


def _through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


def test_partition_longer_than_a_lease_kills_runs_before_takeover(pg_queue: Queue, tmp_path: Path) -> None:
    q = pg_queue
    q.config(heartbeat=HEARTBEAT, lease=LEASE)
    parts = urlsplit(q.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        ledger = tmp_path / "ledger"
        # Given a worker reaching the server through the proxy, running 4 jobs longer than the cut
        ids = enqueue_ledger_jobs(q, ledger, 6, "sleep 8")
        q.env["QUEUECTL_DB"] = _through(proxy, q.url)
        cut_off = q.start_workers("--concurrency", "4", count=1)
        cut_pid = next(w.pid for w in worker_service.list_workers(q.store))
        wait_until(lambda: len(read_ledger(ledger)) >= 4, 20, message="the cut-off worker ran jobs")
        # and others connected directly
        q.env["QUEUECTL_DB"] = q.url
        q.start_workers("--concurrency", "2", count=2)

        # When the proxy is cut for twice a lease, then restored
        time.sleep(0.5)
        cut_at = time.time()
        proxy.cut()
        time.sleep(2 * LEASE)
        proxy.restore()

        # Then the cut-off worker killed its runs before their leases ran out, the others took
        # them over, every job completed once, and the ledger holds
        wait_drained(q, len(ids), 120)
        logs = q.logs()
        assert logs.count("its lease may be taken over") >= 4, logs
        stop_all(q)
        report = check_invariants(
            q.store,
            ledger,
            LEASE,
            heartbeat=HEARTBEAT,
            revoked={cut_pid: cut_at},
            adopters={p.pid for p in q.supervisors},
        )
        assert len(report.duplicates) >= 4, report.summary()  # the killed runs ran again, after the lease
        assert cut_off.returncode == 0
    finally:
        proxy.close()


def test_outcomes_finished_during_a_short_partition_are_written_once_back(pg_queue: Queue, tmp_path: Path) -> None:
    q = pg_queue
    q.config(heartbeat=HEARTBEAT, lease=LEASE)
    parts = urlsplit(q.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        ledger = tmp_path / "ledger"
        # Given one worker behind the proxy, running jobs that end during the cut
        ids = enqueue_ledger_jobs(q, ledger, 4, "sleep 1")
        q.env["QUEUECTL_DB"] = _through(proxy, q.url)
        q.start_workers("--concurrency", "4", count=1)
        wait_until(lambda: len(read_ledger(ledger)) == 4, 20, message="the worker started every job")
        # When the proxy is cut for half a lease
        proxy.cut()
        wait_until(
            lambda: all(run.end is not None for runs in read_ledger(ledger).values() for run in runs.values()),
            10,
            message="the runs ended during the cut",
        )
        time.sleep(max(0.0, LEASE / 2 - 1.0))
        proxy.restore()
        # Then their outcomes are written once the server is reachable again, and nothing ran twice
        wait_drained(q, len(ids), 30)
        assert "will retry" in q.logs(), q.logs()
        stop_all(q)
        report = check_invariants(q.store, ledger, LEASE, heartbeat=HEARTBEAT, adopters={p.pid for p in q.supervisors})
        assert report.duplicates == [] and all(q.job(job_id).attempts == 1 for job_id in ids)
    finally:
        proxy.close()


def test_two_hosts_share_the_queue(pg_queue: Queue, tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("two host names need a UTS namespace (root and unshare)")
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        pytest.skip("this container may not make a UTS namespace (unshare --uts failed)")
    q = pg_queue
    q.config(heartbeat=HEARTBEAT, lease=LEASE)
    ledger = tmp_path / "ledger"
    ids = enqueue_ledger_jobs(q, ledger, 200, "true")
    for host in ("host-a", "host-b"):
        log = tmp_path / f"{host}.log"
        q.add_log(log)
        argv = [sys.executable, "-m", "queuectl", "worker", "start", "--count", "4", "--concurrency", "2"]
        with open(log, "ab") as out:
            q.supervisors.append(
                subprocess.Popen(
                    ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$@"', "sh", *argv],
                    env=q.env,
                    cwd=q.root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
            )
    wait_until(lambda: len(q.running_workers()) == 8, 30, message=lambda: f"8 workers\n{q.logs()}")
    hosts = {w.host for w in q.running_workers()}
    assert hosts == {"host-a", "host-b"}, hosts
    wait_drained(q, len(ids), 120)
    # both hosts did work
    by_worker = {run.worker for runs in read_ledger(ledger).values() for run in runs.values()}
    pids = {w.pid: w.host for w in worker_service.list_workers(q.store)}
    assert {pids[pid] for pid in by_worker if pid in pids} == {"host-a", "host-b"}
    stop_all(q)
    check_invariants(q.store, ledger, LEASE, heartbeat=HEARTBEAT, adopters={p.pid for p in q.supervisors})
