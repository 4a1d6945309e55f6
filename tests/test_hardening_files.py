"""Issue 11 #1: the SQLite queue refuses files and folders that another local user could have planted.

"Another user" is uid 65534 (nobody): as root (CI) the tests ``os.chown`` files to it, or run a
command as it with ``setpriv``; those tests skip, visibly, when not run as root, and the tests
that need an unprivileged user skip as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from queuectl.core.errors import EXIT_UNAVAILABLE, StoreUnavailable
from queuectl.store.sql.files import open_private_file

NOBODY = 65534
SIDE_FILES = ("-wal", "-shm", "-journal")  # beside q.db, read by SQLite
IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root to chown files to another user")
SETPRIV = shutil.which("setpriv")


def cli(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env.update(QUEUECTL_DB=f"sqlite:///{db}", XDG_DATA_HOME=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "queuectl", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def refused(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == EXIT_UNAVAILABLE, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("queuectl: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def refusal(path: Path) -> str:
    with pytest.raises(StoreUnavailable) as caught:
        open_private_file(str(path))
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("suffix", SIDE_FILES)
def test_world_writable_side_file_is_refused(tmp_path: Path, suffix: str) -> None:
    db = tmp_path / "q.db"
    open_private_file(str(db))
    side = Path(f"{db}{suffix}")
    side.touch()
    side.chmod(0o666)  # observed: only the .db file's mode was checked
    assert f"chmod 600 {side}" in refusal(db)
    side.chmod(0o600)
    open_private_file(str(db))


@pytest.mark.parametrize("suffix", SIDE_FILES)
def test_symlinked_side_file_is_refused(tmp_path: Path, suffix: str) -> None:
    db = tmp_path / "q.db"
    open_private_file(str(db))
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    Path(f"{db}{suffix}").symlink_to(target)
    assert "symlink" in refusal(db)
    assert target.read_text() == "precious"


@root_only
@pytest.mark.parametrize("suffix", ("",) + SIDE_FILES)
def test_file_of_another_user_is_refused(tmp_path: Path, suffix: str) -> None:
    db = tmp_path / "q.db"
    open_private_file(str(db))
    planted = Path(f"{db}{suffix}")
    planted.touch()
    planted.chmod(0o600)
    os.chown(planted, NOBODY, NOBODY)  # not writable by others, but its owner writes what it likes
    message = refusal(db)
    assert "another user (uid 65534)" in message and str(planted) in message


def test_folder_writable_by_others_is_refused_without_chmod_600(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    for mode in (0o777, 0o770, 0o2775):
        folder.chmod(mode)
        message = refusal(folder / "q.db")
        assert f"chmod go-w {folder}" in message, message
        assert "chmod 600" not in message  # a folder needs its x bit
    assert not (folder / "q.db").exists()  # refused before anything was created
    refused(cli(tmp_path, folder / "q.db", "enqueue", "true"), "other users can write to this folder")


def test_sticky_shared_folder_is_accepted_with_own_files(tmp_path: Path) -> None:
    folder = tmp_path / "tmp"
    folder.mkdir()
    folder.chmod(0o1777)  # like /tmp
    db = folder / "q.db"
    proc = cli(tmp_path, db, "enqueue", "true", "--id", "j1")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_a_folder_as_database_is_not_told_to_chmod_600(tmp_path: Path) -> None:
    line = refused(cli(tmp_path, tmp_path, "status"), "is a folder", "queue.db")  # sqlite:////tmp
    assert "chmod 600" not in line


@root_only
def test_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o755)
    os.chown(folder, NOBODY, NOBODY)
    message = refusal(folder / "q.db")
    assert "belongs to another user (uid 65534)" in message
    assert "chmod 600" not in message


@root_only
def test_symlink_of_another_user_at_the_database_path_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "tmp"
    folder.mkdir()
    folder.chmod(0o1777)
    mine = tmp_path / "mine.db"
    open_private_file(str(mine))
    link = folder / "q.db"
    link.symlink_to(mine)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    assert "symlink another user (uid 65534) made" in refusal(link)


@pytest.mark.skipif(IS_ROOT, reason="runs as an unprivileged user: as root, the chown tests cover it")
def test_own_files_in_own_folder_are_accepted(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    open_private_file(str(db))
    for suffix in SIDE_FILES:
        Path(f"{db}{suffix}").touch(mode=0o600)
    open_private_file(str(db))


def test_a_side_file_removed_while_it_is_checked_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last process to close a queue removes its -wal and -shm: one that opens the queue at
    that moment saw them, then found them gone, and failed with "cannot open q.db-wal" (exit 5,
    seen from two CLI commands run at once). A side file that is gone has nothing to check."""
    db = tmp_path / "q.db"
    open_private_file(str(db))
    seen = os.path.lexists
    monkeypatch.setattr(os.path, "lexists", lambda path: True if str(path).endswith("-wal") else seen(path))
    open_private_file(str(db))  # the -wal "exists", then is gone when looked at


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A sticky, world-writable folder (like /tmp) that uid 65534 can reach."""
    folder = Path(tempfile.mkdtemp(prefix="queuectl-shared-"))
    folder.chmod(0o1777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@root_only
@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
def test_another_user_cannot_plant_a_wal_for_our_queue(tmp_path: Path, shared_tmp: Path) -> None:
    db = shared_tmp / "q.db"
    wal = Path(f"{db}-wal")
    assert SETPRIV is not None
    plant = subprocess.run(
        [
            SETPRIV,
            "--reuid",
            str(NOBODY),
            "--regid",
            str(NOBODY),
            "--clear-groups",
            "sh",
            "-c",
            f"umask 0 && : > {wal} && : > {db}-shm",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plant.returncode == 0, plant.stderr
    assert wal.stat().st_uid == NOBODY
    refused(cli(tmp_path, db, "enqueue", "echo secret-token"), str(wal), "uid 65534")
    assert wal.stat().st_size == 0  # observed: the victim's command was written into it
    assert not db.exists() or db.stat().st_size == 0
