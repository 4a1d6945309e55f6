"""A full disk: writes fail cleanly with exit 6, reads still work, and the file stays intact.

Needs a small filesystem to fill: a tmpfs mounted for the test (root only; skipped otherwise)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from .disks import small_tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path, "300k") as mount_point:
        yield mount_point


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_DB"] = f"sqlite:///{db}"
    return subprocess.run(
        [sys.executable, "-m", "queuectl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=db.parent.parent,
    )


def test_full_disk_refuses_writes_with_exit_6_and_keeps_reads_and_integrity(small_disk: Path) -> None:
    db = small_disk / "q.db"
    assert cli(db, "enqueue", "echo first", "--id", "first").returncode == 0
    # Given the disk is full
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    jobs_file = small_disk.parent / "big.txt"
    jobs_file.write_text("".join(f"echo {'x' * 2000} {n}\n" for n in range(300)))

    # When writes are attempted
    bulk = cli(db, "enqueue", "--file", str(jobs_file))
    single = cli(db, "enqueue", "echo " + "y" * 4000)

    # Then each fails with exit 6 and one clear line, and nothing was half-written
    for result in (bulk, single):
        assert result.returncode == 6, result
        assert result.stderr.count("\n") == 1 and "is full" in result.stderr
        assert "Traceback" not in result.stderr
    listed = cli(db, "list", "--json")
    assert listed.returncode == 0
    assert [job["id"] for job in json.loads(listed.stdout)] == ["first"]
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
