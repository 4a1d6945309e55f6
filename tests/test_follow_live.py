"""``logs --follow`` reads a running job's output live from the worker's spool file (issue 15).

Real ``worker start`` processes on a real SQLite file, and the real CLI as a subprocess. The
heartbeat is set far longer than the jobs run, so output that arrives while a job runs can only
have come through the spool, never through the database. How fast it arrives is a figure of
``scripts/bench.py follow``, not asserted here.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from test_cli import CLI, Cli, ok
from timed_lines import run_with_line_times

from queuectl.core.errors import EXIT_JOB_CANCELLED, EXIT_JOB_DEAD, EXIT_OK
from queuectl.store import spool
from queuectl.store.spool import SpoolReader, SpoolWriter, open_spool_dir

TIMEOUT_S = 60
# the job starts 3 s from now: the follow (a Python start, slow on a loaded machine) is there first
ATTACH_FIRST = ("--delay", "3s")


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    ok(cli("config", "set", "lease", "60"))
    ok(cli("config", "set", "heartbeat", "20"))  # the database sees output only at the end
    ok(cli("config", "set", "backoff-base", "1"))
    ok(cli("config", "set", "backoff-jitter", "0"))
    return cli


@pytest.fixture
def worker(run: Cli) -> Iterator[subprocess.Popen[bytes]]:
    log = open(run.tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [*CLI, "worker", "start", "--count", "1"],
        env=run.env,
        cwd=run.tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def follow(run: Cli, *args: str) -> tuple[list[tuple[float, str]], float, int, str]:
    """``logs ... --follow``: stdout lines with their arrival times, the exit time, code, stderr."""
    return run_with_line_times([*CLI, "logs", *args, "--follow"], run.env, run.tmp_path, TIMEOUT_S)


def wait_for_state(run: Cli, job_id: str, state: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while run("status", "--json") and f'"{state}"' not in ok(run("show", job_id, "--json")):
        assert time.monotonic() < deadline, f"{job_id} never became {state}"
        time.sleep(0.1)


def test_every_line_arrives_once_in_order_while_the_job_runs(run: Cli, worker: subprocess.Popen[bytes]) -> None:
    command = "for i in $(seq 1 20); do echo line$i; sleep 0.1; done"
    job_id = ok(run("enqueue", command, *ATTACH_FIRST)).strip()
    lines, ended, code, stderr = follow(run, job_id)
    assert code == EXIT_OK, stderr
    assert [text for _, text in lines] == [f"line{i}\n" for i in range(1, 21)]
    # a heartbeat of 20 s saved nothing before the end: these came through the spool, live
    assert lines[0][0] < ended - 1.0 and lines[9][0] < ended - 0.5
    assert f"job {job_id} completed" in stderr
    assert not os.listdir(f"{run.db}.spool"), "the spool file goes when the attempt ends"


def test_a_follow_across_a_retry_ends_with_the_outcome_exit_code(run: Cli, worker: subprocess.Popen[bytes]) -> None:
    job_id = ok(run("enqueue", "echo one; sleep 0.5; echo two; exit 3", "--max-retries", "1", *ATTACH_FIRST)).strip()
    lines, _, code, stderr = follow(run, job_id)
    assert code == EXIT_JOB_DEAD, stderr
    assert [text for _, text in lines] == ["one\n", "two\n", "one\n", "two\n"]
    assert "attempt 1 failed" in stderr and "attempt 2 of 2 started" in stderr


def test_follow_tail_starts_with_the_last_lines_and_cancel_ends_it(run: Cli, worker: subprocess.Popen[bytes]) -> None:
    job_id = ok(run("enqueue", "seq 1 50; sleep 0.5; echo more; sleep 100")).strip()
    wait_for_state(run, job_id, "processing")
    time.sleep(1.0)  # "more" is written
    threading.Timer(1.0, lambda: run("cancel", job_id)).start()
    lines, _, code, stderr = follow(run, job_id, "--tail", "2")
    assert code == EXIT_JOB_CANCELLED, stderr
    assert [text for _, text in lines] == ["50\n", "more\n"]


def test_without_a_spool_it_falls_back_to_the_stored_output(run: Cli) -> None:
    """A spool folder another user could have planted (here: a symlink) is never used: the
    worker spools nothing, and the follow reads the database (at the heartbeat: all at the end)."""
    elsewhere = run.tmp_path / "planted"
    elsewhere.mkdir(mode=0o700)
    os.symlink(elsewhere, f"{run.db}.spool")
    proc = subprocess.Popen(
        [*CLI, "worker", "start", "--count", "1"],
        env=run.env,
        cwd=run.tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        job_id = ok(run("enqueue", "echo a; sleep 0.3; echo b", *ATTACH_FIRST)).strip()
        lines, _, code, stderr = follow(run, job_id)
        assert code == EXIT_OK, stderr
        assert [text for _, text in lines] == ["a\n", "b\n"]
        assert not list(elsewhere.iterdir())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_spool_files_are_private_and_rotate_without_losing_a_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "GENERATION_BYTES", 1000)
    folder = str(tmp_path / "q.db.spool")
    dir_fd = open_spool_dir(folder, create=True)
    assert dir_fd is not None
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    writer = SpoolWriter(dir_fd, "job.1", 2)
    writer.write(b"start\n")
    (name,) = os.listdir(folder)
    assert name == "job.1@2.0" and stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600
    reader = SpoolReader.open(folder, "job.1", 2)
    assert reader is not None and SpoolReader.open(folder, "job.1", 1) is None
    assert SpoolReader.open(folder, "job", 2) is None  # no other job's file matches
    got = [reader.read()]
    sent = [b"start\n"]
    for i in range(200):
        chunk = f"{i:03d} ".encode() * 10
        writer.write(chunk)
        sent.append(chunk)
        if i % 7 == 0:
            got.append(reader.read())
    assert len(os.listdir(folder)) == 1, "a full generation is unlinked once the next exists"
    assert not reader.ended()
    got.append(reader.read())  # a reader a whole generation behind at the close would miss it:
    writer.close()  # the follow then prints that end from the stored output (livetail.beyond)
    got.append(reader.read())
    assert reader.ended() and b"".join(got) == b"".join(sent)
    assert os.listdir(folder) == []
    reader.close()


def test_a_spool_folder_of_another_kind_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    assert open_spool_dir(str(loose), create=False) is None
    os.symlink(loose, tmp_path / "link")
    assert open_spool_dir(str(tmp_path / "link"), create=True) is None


def test_the_stored_end_is_printed_only_where_the_spool_missed_it() -> None:
    from queuectl.service.livetail import beyond

    assert beyond("a\nb\nc\n", "a\nb\nc\n") == ""
    assert beyond("x" * 50 + "a\nb\nc\n", "[... 50 earlier bytes of output dropped ...]\na\nb\nc\n") == ""
    assert beyond("a\nb\n", "a\nb\nc\n") == "c\n"  # the worker died before its last spool write
    assert beyond("", "a\n") == "a\n"
    assert beyond("a\n", None) == ""


def test_a_job_silent_at_first_is_still_followed_live(run: Cli, worker: subprocess.Popen[bytes]) -> None:
    """The spool file is made with the job's first output: the follow keeps looking for it."""
    job_id = ok(run("enqueue", "sleep 1.5; echo late; sleep 4; echo last", *ATTACH_FIRST)).strip()
    lines, ended, code, stderr = follow(run, job_id)
    assert code == EXIT_OK, stderr
    assert [text for _, text in lines] == ["late\n", "last\n"]
    # 4 s before the end (heartbeat 20 s): only the spool could bring it, even on a loaded machine
    assert lines[0][0] < ended - 2.0, "late arrived while the job still ran"


def test_a_server_queue_spools_in_a_private_tmp_folder_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from queuectl.store.spool import spool_dir_for

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    one = spool_dir_for("postgresql://app:secret@db.example/queue")
    assert one.startswith(f"{tmp_path}/queuectl-{os.getuid()}-spool-") and "secret" not in one
    assert one == spool_dir_for("postgresql://app:other@db.example/queue")  # the password is not part of it
    assert one != spool_dir_for("postgresql://app:secret@db.example/other")
    assert spool_dir_for(f"sqlite:///{tmp_path}/q.db") == f"{tmp_path}/q.db.spool"


def test_a_killed_writers_spool_files_are_swept_a_live_ones_are_not(tmp_path: Path) -> None:
    """A writer holds a lock on its file: another process's sweep leaves it alone; once the
    writer is gone (SIGKILLed: here, a child that exits without closing), the file is swept."""
    import sys

    from queuectl.store.spool import sweep_stale

    folder = str(tmp_path / "q.db.spool")
    dir_fd = open_spool_dir(folder, create=True)
    assert dir_fd is not None
    child = (
        "import os, sys, time; from queuectl.store.spool import SpoolWriter, open_spool_dir; "
        f"w = SpoolWriter(open_spool_dir({folder!r}, True), sys.argv[1], 1); w.write(b'x'); "
        "print('ready', flush=True); time.sleep(float(sys.argv[2])); os._exit(0)"
    )
    live = subprocess.Popen([sys.executable, "-c", child, "live", "30"], stdout=subprocess.PIPE, text=True)
    dead = subprocess.Popen([sys.executable, "-c", child, "dead", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None and live.stdout.readline() == "ready\n"
        assert dead.wait(timeout=30) == 0
        assert sorted(os.listdir(folder)) == ["dead@1.0", "live@1.0"]
        assert sweep_stale(dir_fd) == 1
        assert os.listdir(folder) == ["live@1.0"]
    finally:
        live.kill()
        live.wait()
