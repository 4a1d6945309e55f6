"""Issue 11 #3: ``./.env`` chooses the queue only when it is the user's own and not writable by others.

Observed before: root running ``worker start`` in a folder holding another user's ``.env`` served
that user's queue, running their jobs as root, without a word.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from queuectl.core.config import default_db_url, resolve_db_url

NOBODY = 65534
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("QUEUECTL_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return folder


def write_env(folder: Path, url: str, mode: int = 0o600) -> Path:
    path = folder / ".env"
    path.write_text(f"QUEUECTL_DB={url}\n")
    path.chmod(mode)
    return path


@pytest.mark.skipif(not IS_ROOT, reason="needs root to chown the .env to another user")
def test_dotenv_of_another_user_is_ignored_with_a_warning(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_env(project, "sqlite:////tmp/attacker.db")
    os.chown(path, NOBODY, NOBODY)
    assert resolve_db_url() == default_db_url()  # observed: the attacker's queue
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "uid 65534" in err, err


def test_dotenv_writable_by_others_is_ignored_with_a_warning(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_env(project, "sqlite:////tmp/attacker.db", mode=0o666)
    assert resolve_db_url() == default_db_url()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "chmod go-w" in err, err


@pytest.mark.skipif(not IS_ROOT, reason="the warning about root needs root")
def test_root_is_told_which_dotenv_chose_the_queue(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_env(project, "sqlite:////tmp/mine.db")
    assert resolve_db_url() == "sqlite:////tmp/mine.db"
    err = capsys.readouterr().err
    assert err.startswith("queuectl: warning: QUEUECTL_DB comes from ") and str(path) in err, err
    assert err.count("\n") == 1 and "mine.db" not in err  # the file is named, not the URL


@pytest.mark.skipif(IS_ROOT, reason="as root a warning is expected (see the test above)")
def test_own_dotenv_is_used_silently(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_env(project, "sqlite:////tmp/mine.db")
    assert resolve_db_url() == "sqlite:////tmp/mine.db"
    assert capsys.readouterr().err == ""


def test_foreign_dotenv_without_the_key_is_not_mentioned(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = project / ".env"
    path.write_text("OTHER_TOOL=1\n")
    path.chmod(0o666)
    assert resolve_db_url() == default_db_url()
    assert capsys.readouterr().err == ""


def test_option_and_environment_never_read_the_dotenv(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_env(project, "sqlite:////tmp/attacker.db", mode=0o666)
    assert resolve_db_url("sqlite:////tmp/flag.db") == "sqlite:////tmp/flag.db"
    monkeypatch.setenv("QUEUECTL_DB", "sqlite:////tmp/env.db")
    assert resolve_db_url() == "sqlite:////tmp/env.db"
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not IS_ROOT, reason="needs root to chown the .env to another user")
def test_cli_as_root_ignores_a_planted_dotenv(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    planted = write_env(project, f"sqlite:///{tmp_path / 'attacker.db'}")
    os.chown(planted, NOBODY, NOBODY)
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "queuectl", "config", "list", "--json"],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["database"] == f"sqlite:///{tmp_path / 'data' / 'queuectl' / 'queue.db'}"
    assert not (tmp_path / "attacker.db").exists()
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and str(planted) in lines[0], proc.stderr
