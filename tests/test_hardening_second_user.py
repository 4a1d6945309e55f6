"""Issue 11, done when: a second local user cannot read, inject or delete anything.

The queue lives in a sticky, world-writable folder (like /tmp), the hardest place the README
allows. The second user is uid 65534 (nobody), reached with ``setpriv`` as CI runs as root; it
runs only the shell and coreutils (the project's Python may sit in a folder it cannot enter).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from queuectl.core import lifecycle
from queuectl.core.models import Job
from queuectl.store.sql.sqlite import SqliteStore

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become a second user with setpriv"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
]
SECRET = "secret-token-4b1d"


def as_nobody(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SETPRIV is not None
    return subprocess.run(
        [SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "sh", "-c", script],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def queuectl(cwd: Path, tmp_path: Path, *args: str, db: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    if db is not None:
        env["QUEUECTL_DB"] = f"sqlite:///{db}"
    return subprocess.run(
        [sys.executable, "-m", "queuectl", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def shared() -> Iterator[Path]:
    """A sticky, world-writable folder that uid 65534 can reach (every parent searchable)."""
    folder = Path(tempfile.mkdtemp(prefix="queuectl-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_second_user_can_neither_read_nor_change_nor_delete_a_queue_in_a_shared_folder(
    shared: Path, tmp_path: Path
) -> None:
    db = shared / "q.db"
    proc = queuectl(shared, tmp_path, "enqueue", f"curl -H 'Authorization: {SECRET}' https://x", "--id", "j1", db=db)
    assert proc.returncode == 0, proc.stderr
    store = SqliteStore(str(db))  # an open connection keeps the -wal and -shm files in place
    try:
        lifecycle.enqueue(store, [Job(id="j2", command=f"echo {SECRET}", created_at=1.0, updated_at=1.0, run_at=1.0)])
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(path.exists() for path in files)
        for path in files:
            attempt = as_nobody(
                f"cat {path}; printf x >> {path}; rm -f {path}; mv {path} {path}.moved; ln -sf /tmp {path}; true",
                shared,
            )
            assert SECRET not in attempt.stdout
            assert "Permission denied" in attempt.stderr or "Operation not permitted" in attempt.stderr
        search = as_nobody(f"grep -r {SECRET} . ; ls -a q.db.wake; true", shared)
        assert SECRET not in search.stdout and "Permission denied" in search.stderr
        assert all(path.exists() and not path.is_symlink() and path.stat().st_uid == 0 for path in files)
        assert sorted(job.id for job in store.list_jobs()) == ["j1", "j2"]
        assert store.get("j1").command.startswith("curl")  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_wake_symlink_planted_by_a_second_user_deletes_nothing(shared: Path, tmp_path: Path) -> None:
    victim = shared / "victim"
    victim.mkdir(mode=0o700)
    (victim / "thesis.tex").write_text("years of work")
    planted = as_nobody("ln -s victim q.db.wake", shared)
    assert planted.returncode == 0, planted.stderr
    proc = queuectl(shared, tmp_path, "enqueue", "true", "--id", "j1", db=shared / "q.db")
    assert proc.returncode == 0 and proc.stdout == "j1\n", proc.stderr
    assert (victim / "thesis.tex").read_text() == "years of work"


def test_a_dotenv_planted_by_a_second_user_does_not_choose_roots_queue(shared: Path, tmp_path: Path) -> None:
    attacker = shared / "attacker.db"
    planted = as_nobody(f"printf 'QUEUECTL_DB=sqlite:///{attacker}\\n' > .env", shared)
    assert planted.returncode == 0, planted.stderr
    proc = queuectl(shared, tmp_path, "config", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["database"] == f"sqlite:///{tmp_path / 'data' / 'queuectl' / 'queue.db'}"
    assert not attacker.exists()
    assert str(shared / ".env") in proc.stderr  # a one-line warning names the file it ignored
