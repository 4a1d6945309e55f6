"""Issue 11 #2: the wake-socket folder never follows a symlink and removes only our own sockets.

Observed before: a symlink planted at ``<db>.wake`` (or at the predictable ``$TMPDIR`` name used for
long paths) made the next enqueue unlink every regular file of a folder the attacker chose.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from queuectl.store.wake import SocketWaker, notify_all, wake_dir_for

NOBODY = 65534
IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root to chown files to another user")


def victim_folder(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    return victim


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on any more (its worker died)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()


def test_symlinked_wake_folder_is_neither_followed_nor_emptied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = victim_folder(tmp_path)
    wake = tmp_path / "q.db.wake"
    wake.symlink_to(victim)
    notify_all(str(wake))
    assert (victim / "thesis.tex").read_text() == "years of work"  # observed: unlinked
    with pytest.raises(OSError):
        SocketWaker(str(wake), "w1")  # the worker polls instead
    assert sorted(os.listdir(victim)) == ["thesis.tex"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"not using the wake folder {wake}" in err, err


def test_wake_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    wake = tmp_path / "q.db.wake"
    wake.write_text("not a folder")
    with pytest.raises(OSError):
        SocketWaker(str(wake), "w1")
    notify_all(str(wake))
    assert wake.read_text() == "not a folder"


def test_wake_folder_is_created_0700_and_wakes(tmp_path: Path) -> None:
    wake = tmp_path / "q.db.wake"
    waker = SocketWaker(str(wake), "w1")
    try:
        assert stat.S_IMODE(os.lstat(wake).st_mode) == 0o700
        notify_all(str(wake), b"s")
        assert waker.drain() == b"s"
    finally:
        waker.close()
    assert os.listdir(wake) == []


def test_only_our_dead_sockets_are_removed(tmp_path: Path) -> None:
    wake = tmp_path / "q.db.wake"
    SocketWaker(str(wake), "w1").close()  # creates the folder
    (wake / "notes.txt").write_text("keep me")
    stale_socket(wake / "dead-worker")
    notify_all(str(wake))
    assert sorted(os.listdir(wake)) == ["notes.txt"]  # observed: notes.txt unlinked too


def test_group_writable_wake_folder_is_not_used(tmp_path: Path) -> None:
    wake = tmp_path / "q.db.wake"
    wake.mkdir()
    wake.chmod(0o777)
    (wake / "notes.txt").write_text("keep me")
    with pytest.raises(OSError):
        SocketWaker(str(wake), "w1")
    notify_all(str(wake))
    assert os.listdir(wake) == ["notes.txt"]


@root_only
def test_wake_folder_or_socket_of_another_user_is_left_alone(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.wake"
    theirs.mkdir(mode=0o700)
    stale_socket(theirs / "their-worker")
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(OSError):
        SocketWaker(str(theirs), "w1")
    notify_all(str(theirs))
    assert os.listdir(theirs) == ["their-worker"]
    mine = tmp_path / "q.db.wake"
    SocketWaker(str(mine), "w1").close()
    stale_socket(mine / "planted")
    os.chown(mine / "planted", NOBODY, NOBODY)
    notify_all(str(mine))
    assert os.listdir(mine) == ["planted"]


def test_long_path_wake_folder_planted_in_tmpdir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    db = tmp_path / ("d" * 90) / "q.db"
    wake = Path(wake_dir_for(str(db)))
    assert wake.parent == tmp_path  # the predictable name in the shared temp folder
    victim = victim_folder(tmp_path)
    wake.symlink_to(victim)
    notify_all(str(wake))
    assert (victim / "thesis.tex").exists()


def test_enqueue_with_a_planted_wake_symlink_deletes_nothing(tmp_path: Path) -> None:
    victim = victim_folder(tmp_path)
    db = tmp_path / "q.db"
    Path(f"{db}.wake").symlink_to(victim)
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env.update(QUEUECTL_DB=f"sqlite:///{db}", XDG_DATA_HOME=str(tmp_path / "data"))
    proc = subprocess.run(
        [sys.executable, "-m", "queuectl", "enqueue", "true", "--id", "j1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout == "j1\n", proc.stderr
    assert "Traceback" not in proc.stderr
    assert (victim / "thesis.tex").read_text() == "years of work"  # observed: deleted
