"""Recovery from a full disk on a small filesystem (issue 11 #9). Every heartbeat used to re-save
up to 64 KiB of output per job, and SQLite checkpoints only once its WAL holds 4 MB: on a 4 MiB
filesystem the WAL filled the disk and no outcome was ever written again. Now, while writes are
refused, heartbeats renew leases only, and the store checkpoints early to give the space back.

Needs a small filesystem to fill: a tmpfs mounted for the test (root only; skipped otherwise)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from .disks import small_tmpfs

JOBS = 6
# ~40 KB of fresh output every 0.2 s for ~5 s: the kept tail (64 KiB) changes at every heartbeat
NOISY = "for i in $(seq 25); do head -c 30000 /dev/urandom | base64; sleep 0.2; done"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path, "4m") as mount_point:
        yield mount_point


def env_for(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_DB"] = f"sqlite:///{db}"
    return env


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queuectl", *args],
        env=env_for(db),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=db.parent.parent,
    )


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return filler


def test_workers_recover_from_a_full_small_disk_and_record_every_outcome(small_disk: Path, tmp_path: Path) -> None:
    db = small_disk / "q.db"
    for key, value in (("heartbeat", "0.3"), ("lease", "30")):
        assert cli(db, "config", "set", key, value).returncode == 0
    for n in range(JOBS):
        assert cli(db, "enqueue", NOISY, "--id", f"noisy{n}").returncode == 0
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "queuectl.runtime.worker", "--burst", "--concurrency", str(JOBS)],
            env=env_for(db),
            stderr=log,
            cwd=tmp_path,
        )
    try:
        # Given the disk fills up while the jobs run and write output
        time.sleep(1.0)
        filler = fill(small_disk)
        time.sleep(2.0)
        # When space is freed again
        filler.unlink()
        # Then the worker records every outcome and ends
        code = worker.wait(timeout=45)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log_path.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    assert "heartbeats stop saving job output" in text, text[-3000:]  # the full disk was seen
    states = {}
    conn = sqlite3.connect(db)
    for job_id, state, attempts, output in conn.execute("SELECT id, state, attempts, output FROM jobs"):
        states[job_id] = (state, attempts)
        assert output, job_id
    assert states == {f"noisy{n}": ("completed", 1) for n in range(JOBS)}, text[-3000:]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
