"""While the store refuses writes (a full disk), heartbeats renew leases only and save no output
(issue 11 #9); once a write succeeds again the output is saved, including what a failed
heartbeat had carried. The full disk is a store whose writes fail on demand."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from queuectl.core import lifecycle
from queuectl.core.errors import StoreReadOnly
from queuectl.core.models import Job
from queuectl.runtime.worker import Worker, WorkerOptions
from queuectl.store.sql.sqlite import SqliteStore


class FullStore:
    """A real store whose job updates fail like a full disk while ``full``; records what beats carry."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.full = False
        self.outputs: list[bool] = []  # per heartbeat update: did it carry output?

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.store, name)
        if name != "update_job":
            return target

        def update_job(job_id: str, changes: dict[str, Any], **kwargs: Any) -> Any:
            if "state" not in changes:
                self.outputs.append("output" in changes)
            if self.full:
                raise StoreReadOnly("the disk holding q.db is full: free space and try again")
            return target(job_id, changes, **kwargs)

        return update_job


def test_heartbeats_stop_saving_output_while_the_disk_is_full(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "q.db"))
    full = FullStore(store)
    worker = Worker(full, WorkerOptions())  # type: ignore[arg-type]
    now = time.time()
    lifecycle.enqueue_job(
        store, Job(id="j1", command="echo hello; sleep 30", created_at=now, updated_at=now, run_at=now)
    )
    [job] = store.claim(worker.id, None, now, worker.config.lease, 1)
    worker._start(job)
    slot = worker.slots["j1"]
    assert slot.run is not None
    try:
        deadline = time.monotonic() + 5
        while b"hello" not in bytes(slot.run._tail) and time.monotonic() < deadline:
            slot.run.read()
            time.sleep(0.01)

        # Given a heartbeat carrying output fails on a full disk
        full.full = True
        worker._heartbeat()
        assert full.outputs == [True] and not worker.saving_output

        # When more heartbeats come while it is full: lease renewals only
        worker._heartbeat()
        worker._heartbeat()
        assert full.outputs[1:] == [False, False]

        # Then, space back, the first successful beat renews, and the next saves the output again
        full.full = False
        worker._heartbeat()
        assert worker.saving_output
        worker._heartbeat()
        assert full.outputs[3:] == [False, True]
        saved = store.get("j1")
        assert saved is not None and saved.output is not None and "hello" in saved.output
    finally:
        slot.run.signal(9)
