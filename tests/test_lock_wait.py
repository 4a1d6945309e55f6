"""Issue 11 #5: a long write lock must not cost healthy workers their leases. Lease times are
computed once the lock is had, not before waiting for it."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from queuectl.core import lifecycle
from queuectl.core.models import Job, Lease
from queuectl.store.sql.sqlite import SqliteStore

LEASE = 0.5
HOLD = 1.2  # longer than the lease


def hold_write_lock(path: str, seconds: float, taken: threading.Event) -> threading.Thread:
    """Another process's long write transaction (a big bulk enqueue), in a thread."""

    def run() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_heartbeat_that_waited_for_the_lock_writes_a_lease_that_is_still_running(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    now = time.time()
    lifecycle.enqueue(store, [Job(id="j", command="true", created_at=now, updated_at=now, run_at=now)])
    [job] = store.claim("w", None, now, LEASE)
    taken = threading.Event()
    holder = hold_write_lock(store.path, HOLD, taken)
    taken.wait(5)
    asked_at = time.time()
    lost = lifecycle.heartbeat(store, "w", [(Lease("j", "w", job.attempts), None)], asked_at, LEASE)
    written_at = time.time()
    holder.join()
    renewed = store.get("j")
    assert lost == set() and renewed is not None and renewed.lease_expires_at is not None
    # before the fix: asked_at + LEASE, which had passed before it was even written
    assert renewed.lease_expires_at >= written_at - 0.1 + LEASE - 0.05
    assert store.expired(written_at) == []
    store.close()


def test_a_claim_that_waited_for_the_lock_gets_a_whole_lease(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    now = time.time()
    lifecycle.enqueue(store, [Job(id="j", command="true", created_at=now, updated_at=now, run_at=now)])
    taken = threading.Event()
    holder = hold_write_lock(store.path, HOLD, taken)
    taken.wait(5)
    asked_at = time.time()
    [claimed] = lifecycle.claim(store, "w", None, asked_at, LEASE, 1)
    got_at = time.time()
    holder.join()
    assert claimed.lease_expires_at is not None and claimed.lease_expires_at >= got_at - 0.1 + LEASE - 0.05
    store.close()


def test_a_recovery_that_waited_out_a_long_lock_leaves_live_jobs_alone(tmp_path: Path) -> None:
    from queuectl.core.config import RuntimeConfig

    # Given a live worker's job whose lease ran out only because a bulk insert held the lock
    store = SqliteStore(str(tmp_path / "q.db"))
    now = time.time()
    lifecycle.enqueue(store, [Job(id="j", command="true", created_at=now, updated_at=now, run_at=now)])
    store.claim("live", None, now, LEASE)
    taken = threading.Event()
    holder = hold_write_lock(store.path, HOLD, taken)
    taken.wait(5)
    time.sleep(LEASE + 0.1)  # the lease is over while the lock is still held
    # When another worker's recovery pass, which saw the expiry, finally gets the lock
    recovered = lifecycle.recover_expired(store, RuntimeConfig(heartbeat=0.2, lease=LEASE), time.time())
    holder.join()
    # Then it stands back: the live worker could not renew either; its heartbeat comes next
    assert recovered == []
    job = store.get("j")
    assert job is not None and job.state == "processing" and job.locked_by == "live"
    store.close()
