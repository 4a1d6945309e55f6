"""SQLite's locks are fcntl locks, which POSIX drops for the whole process when *any* descriptor
of the file is closed. A store that closed a descriptor of its own database file (it flocks the
file while creating it) lost its connection's shared lock; the next process to close its
connection then believed it was the last, checkpointed and deleted the ``-wal`` and ``-shm``
files under the store, which went on reading a log nobody wrote any more: it never saw another
write (and its own writes went to a deleted file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from queuectl.store.sql.sqlite import SqliteStore


def _enqueue(path: Path, job_id: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env["QUEUECTL_DB"] = f"sqlite:///{path}"
    subprocess.run(
        [sys.executable, "-m", "queuectl", "enqueue", "true", "--id", job_id],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_a_store_that_created_its_file_sees_what_other_processes_write_after_they_close(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = SqliteStore(str(path))  # first use: the file is created and migrated under an flock
    try:
        for job_id in ("first", "second", "third"):  # each command closes its store on exit
            _enqueue(path, job_id)
            assert store.get(job_id) is not None, f"{job_id} written by another process is not seen"
        assert os.path.exists(f"{path}-wal")  # the log this store reads is the one on disk
    finally:
        store.close()


def test_closing_one_of_two_stores_on_a_file_leaves_the_other_seeing_writes(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    first = SqliteStore(str(path))
    second = SqliteStore(str(path))
    first.close()
    try:
        _enqueue(path, "later")
        assert second.get("later") is not None
    finally:
        second.close()


def test_threads_of_one_process_still_take_turns_in_the_flock(tmp_path: Path) -> None:
    import threading
    import time

    from queuectl.store.sql.files import exclusive_flock, hold_file, release_file

    path = tmp_path / "q.db"
    path.write_bytes(b"")
    hold_file(str(path))
    inside, most = [0], [0]

    def enter() -> None:
        with exclusive_flock(str(path)):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            inside[0] -= 1

    threads = [threading.Thread(target=enter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    release_file(str(path))
    assert most[0] == 1
