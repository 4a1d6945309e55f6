"""``queuectl logs`` (and ``--follow`` against a real worker) and ``queuectl metrics`` (printed and
served), through the real CLI, plus the pure pieces they are built on.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from timed_lines import run_with_line_times

from queuectl.core import lifecycle
from queuectl.core.errors import EXIT_JOB_DEAD, EXIT_NOT_FOUND, StoreUnavailable
from queuectl.core.models import Job, WorkerInfo
from queuectl.service import workers as worker_service
from queuectl.service.logtail import SKIPPED, Follower, final_note, follow, new_part, split_marker
from queuectl.store.sql.sqlite import SqliteStore
from queuectl.web.metrics import QueueCollector, exposition, registry_for

CLI = [sys.executable, "-m", "queuectl"]
TIMEOUT_S = 30


# --- helpers ------------------------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env.update(
        {
            "QUEUECTL_DB": f"sqlite:///{tmp_path / 'q.db'}",
            "XDG_DATA_HOME": str(tmp_path),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def cli(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CLI, *args],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT_S,
    )
    if check:
        assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def job(job_id: str, state: str, now: float, **fields: Any) -> Job:
    fields.setdefault("created_at", now - 100)
    fields.setdefault("updated_at", fields["created_at"])
    fields.setdefault("run_at", fields["created_at"])
    return Job(id=job_id, command=fields.pop("command", "true"), state=state, **fields)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "q.db"))
    yield store
    store.close()


def tail_of(stream: str, limit: int) -> str:
    """What the executor stores: the last ``limit`` bytes, with a marker once anything was cut."""
    data = stream.encode()
    if len(data) <= limit:
        return stream
    dropped = len(data) - limit
    return f"[... {dropped} earlier bytes of output dropped ...]\n" + data[dropped:].decode(errors="replace")


# --- new_part: what to print when the stored tail changes --------------------------------------


def test_new_part_of_a_growing_output() -> None:
    assert new_part(None, "a\n") == "a\n"
    assert new_part("a\n", "a\nb\n") == "b\n"
    assert new_part("a\n", "a\n") == ""
    assert new_part("a\n", None) == ""


@pytest.mark.parametrize("line", ["tick {i}\n", "é→ {i} ünïcode\n", "y\n"])
def test_new_part_across_a_sliding_tail(line: str) -> None:
    """Any two reads less than a tail apart line up exactly, even for repetitive output."""
    stream = "".join(line.format(i=i) for i in range(4000))
    rng = random.Random(1)
    limit = 2048
    for _ in range(200):
        start = rng.randrange(0, len(stream) - 1)
        end = min(len(stream), start + rng.randrange(1, limit // 2))
        old, new = tail_of(stream[:start], limit), tail_of(stream[:end], limit)
        assert new_part(old, new) == stream[start:end], (start, end)


def test_new_part_without_the_marker_uses_the_longest_overlap() -> None:
    assert new_part("one\ntwo\nthree\n", "two\nthree\nfour\n") == "four\n"


def test_new_part_after_a_gap_says_output_was_skipped() -> None:
    stream = "".join(f"line {i}\n" for i in range(5000))
    old, new = tail_of(stream[:1000], 1024), tail_of(stream, 1024)
    assert new_part(old, new) == SKIPPED + split_marker(new)[1]


# --- the follower: retries and the previous run's output ---------------------------------------


def test_follower_holds_back_the_previous_runs_output_until_the_retry_saves_its_own() -> None:
    first = job("j", "processing", 0, attempts=1, max_retries=1, started_at=10.0, output="try\n")
    follower = Follower(first)
    assert [e.text for e in follower.first(first)] == ["try\n"]
    failed = job(
        "j",
        "failed",
        0,
        attempts=1,
        max_retries=1,
        started_at=10.0,
        output="try\nno\n",
        last_error="exit code 1",
        run_at=20.0,
    )
    events = follower.update(failed)
    assert [e.text for e in events if e.text] == ["no\n"]
    assert any("attempt 1 failed (exit code 1)" in e.note for e in events)
    assert follower.update(failed) == []  # said once
    retry = job("j", "processing", 0, attempts=2, max_retries=1, started_at=21.0, output="try\nno\n")
    events = follower.update(retry)
    assert [e.note for e in events] == ["attempt 2 of 2 started"]  # the stale output is not repeated
    own = job("j", "processing", 0, attempts=2, max_retries=1, started_at=21.0, output="try\n")
    assert [e.text for e in follower.update(own)] == ["try\n"]
    done = job(
        "j",
        "dead",
        0,
        attempts=2,
        max_retries=1,
        started_at=21.0,
        output="try\nno\n",
        exit_code=1,
        last_error="exit code 1",
        duration=0.5,
    )
    assert [e.text for e in follower.update(done)] == ["no\n"]
    assert final_note(done) == "job j dead (exit code 1, ran 500ms, attempt 2 of 2)"
    cancelled = job("j", "cancelled", 0, attempts=1, last_error="cancelled by user\nmore")
    assert final_note(cancelled) == "job j cancelled (attempt 1 of 4, cancelled by user)"


def test_follow_rides_out_an_unavailable_store() -> None:
    reads: Iterator[Job | Exception] = iter(
        [
            job("j", "processing", 0, started_at=1.0, output="a\n"),
            StoreUnavailable("down"),
            job("j", "completed", 0, started_at=1.0, output="a\nb\n", exit_code=0),
        ]
    )

    def read() -> Job | None:
        item = next(reads)
        if isinstance(item, Exception):
            raise item
        return item

    out: list[str] = []
    errors: list[Exception] = []

    def retry(exc: Exception) -> bool:
        errors.append(exc)
        return True

    last = follow(read, out.append, lambda note: None, sleep=lambda s: None, on_error=retry)
    assert "".join(out) == "a\nb\n" and last is not None and last.state == "completed"
    assert len(errors) == 1


# --- logs through the CLI ------------------------------------------------------------------------


def test_logs_prints_a_finished_jobs_output_as_is(db: SqliteStore, tmp_path: Path) -> None:
    output = "hello [bold]not markup[/bold]\n\ttabbed \x1b[31mraw\x1b[0m\nno newline at the end"
    lifecycle.enqueue(db, [job("done1", "completed", time.time(), output=output, exit_code=0)])
    result = cli(tmp_path, "logs", "done1")
    assert result.stdout == output
    assert result.stderr == ""


def test_logs_of_a_job_without_output_prints_nothing(db: SqliteStore, tmp_path: Path) -> None:
    lifecycle.enqueue(db, [job("quiet", "completed", time.time(), exit_code=0)])
    assert cli(tmp_path, "logs", "quiet").stdout == ""


def test_logs_of_a_pending_job_says_so_on_stderr(db: SqliteStore, tmp_path: Path) -> None:
    lifecycle.enqueue(db, [job("later", "pending", time.time())])
    result = cli(tmp_path, "logs", "later")
    assert result.stdout == "" and "later is pending" in result.stderr and "--follow" in result.stderr


def test_logs_of_an_unknown_job_exits_3(db: SqliteStore, tmp_path: Path) -> None:
    result = cli(tmp_path, "logs", "nope", check=False)
    assert result.returncode == EXIT_NOT_FOUND
    assert result.stderr.startswith("queuectl: error: ") and "nope" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.fixture
def worker(tmp_path: Path, db: SqliteStore) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process (heartbeat 0.2 s, lease 1 s), killed afterwards."""
    cli(tmp_path, "config", "set", "heartbeat", "0.2")
    cli(tmp_path, "config", "set", "lease", "1")
    cli(tmp_path, "config", "set", "backoff-base", "1")
    cli(tmp_path, "config", "set", "poll-interval", "0.1")
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuectl.runtime.worker"],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not [w for w in worker_service.list_workers(db) if w.state == "running"]:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker did not register"
            time.sleep(0.05)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


def follow_subprocess(tmp_path: Path, job_id: str) -> tuple[list[tuple[float, str]], float, int, str]:
    """Run ``logs ID --follow``: (stdout lines with their arrival time, exit time, code, stderr)."""
    return run_with_line_times([*CLI, "logs", job_id, "--follow"], cli_env(tmp_path), tmp_path, TIMEOUT_S)


def test_logs_follow_streams_a_running_jobs_output(worker: Any, tmp_path: Path, db: SqliteStore) -> None:
    # --delay: the follow is there before the job starts, even on a loaded machine
    job_id = cli(tmp_path, "enqueue", "for i in 1 2 3; do echo line$i; sleep 0.5; done", "--delay", "3s").stdout.strip()
    lines, ended, code, stderr = follow_subprocess(tmp_path, job_id)
    assert code == 0, stderr
    assert [text for _, text in lines] == ["line1\n", "line2\n", "line3\n"]
    assert lines[0][0] < ended - 0.4, "line1 should arrive while the job still runs"
    assert f"job {job_id} completed (exit code 0" in stderr
    assert db.get(job_id).state == "completed"  # type: ignore[union-attr]


def test_logs_follow_keeps_following_through_a_retry(worker: Any, tmp_path: Path) -> None:
    job_id = cli(
        tmp_path, "enqueue", "echo try; sleep 0.3; echo failing; exit 3", "--max-retries", "1", "--delay", "3s"
    ).stdout.strip()
    lines, _, code, stderr = follow_subprocess(tmp_path, job_id)
    assert code == EXIT_JOB_DEAD, stderr  # the follow ends with the job's outcome, as wait does
    assert [text for _, text in lines] == ["try\n", "failing\n", "try\n", "failing\n"]
    assert "attempt 1 failed (exit code 3)" in stderr and "attempt 2 of 2 started" in stderr
    assert f"job {job_id} dead (exit code 3" in stderr


# --- metrics ---------------------------------------------------------------------------------------


def fill_for_metrics(store: SqliteStore, now: float) -> None:
    lifecycle.enqueue(
        store,
        [
            job("c1", "completed", now, duration=1.5, finished_at=now - 10, exit_code=0),
            job("c2", "completed", now, duration=2.5, finished_at=now - 5, exit_code=0),
            job("c3", "completed", now, queue="builds", duration=4.0, finished_at=now - 5, exit_code=0),
            job("p1", "pending", now, created_at=now - 42),
            job("p2", "pending", now, queue="builds", created_at=now - 7),
            job("f1", "failed", now, attempts=1, run_at=now + 60, last_error="exit code 1"),
            job("d1", "dead", now, attempts=4, last_error="exit code 1"),
        ],
    )
    worker_service.register_worker(
        store, WorkerInfo(id="w1", host="h", pid=1, state="running", started_at=now, last_heartbeat=now - 1)
    )
    worker_service.register_worker(
        store, WorkerInfo(id="w2", host="h", pid=2, state="running", started_at=now, last_heartbeat=now - 3600)
    )  # unresponsive: not alive


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def check_metrics(text: str) -> None:
    values = samples(text)
    assert values[("queuectl_up", ())] == 1
    assert values[("queuectl_jobs", (("queue", "default"), ("state", "completed")))] == 2
    assert values[("queuectl_jobs", (("queue", "builds"), ("state", "completed")))] == 1
    assert values[("queuectl_jobs", (("queue", "builds"), ("state", "pending")))] == 1
    assert values[("queuectl_jobs", (("queue", "default"), ("state", "cancelled")))] == 0
    assert values[("queuectl_workers_alive", ())] == 1
    assert 41 <= values[("queuectl_oldest_pending_age_seconds", ())] < 60
    assert values[("queuectl_jobs_completed_total", ())] == 3
    assert values[("queuectl_jobs_failed_total", ())] == 2  # failed + dead
    assert values[("queuectl_job_duration_seconds_count", ())] == 3
    assert values[("queuectl_job_duration_seconds_sum", ())] == pytest.approx(8.0)
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["queuectl_jobs"] == "gauge" and types["queuectl_jobs_completed"] == "counter"
    assert types["queuectl_job_duration_seconds"] == "summary"


def test_metrics_exposition(db: SqliteStore) -> None:
    fill_for_metrics(db, time.time())
    check_metrics(exposition(db))


def test_metrics_on_every_backend(store: Any) -> None:
    """The shared ``store`` fixture: SQLite, mongomock, and a real MongoDB when configured."""
    fill_for_metrics(store, time.time())
    check_metrics(exposition(store))


def test_metrics_command_prints_the_exposition(db: SqliteStore, tmp_path: Path) -> None:
    fill_for_metrics(db, time.time())
    result = cli(tmp_path, "metrics")
    check_metrics(result.stdout)
    assert "python_gc" not in result.stdout and "process_" not in result.stdout  # only the queue


def test_a_failed_scrape_answers_up_0_when_serving() -> None:
    class Down:
        def counts(self) -> Any:
            raise StoreUnavailable("cannot reach it")

    from prometheus_client import generate_latest

    text = generate_latest(registry_for(Down(), strict=False)).decode()  # type: ignore[arg-type]
    assert samples(text) == {("queuectl_up", ()): 0}
    with pytest.raises(StoreUnavailable):
        list(QueueCollector(Down()).collect())  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_metrics_serve_answers_fresh_scrapes_until_terminated(db: SqliteStore, tmp_path: Path) -> None:
    fill_for_metrics(db, time.time())
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "metrics", "--serve", str(port)],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    body = reply.read().decode()
                    assert reply.status == 200
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the metrics server did not come up"
                time.sleep(0.1)
        check_metrics(body)
        lifecycle.enqueue(db, [job("c4", "completed", time.time(), duration=1.0, exit_code=0)])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            again = samples(reply.read().decode())
        assert again[("queuectl_jobs_completed_total", ())] == 4  # read afresh for each scrape
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in err
    assert "Traceback" not in err


def test_metrics_serve_on_a_busy_port_is_one_error_line(db: SqliteStore, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = cli(tmp_path, "metrics", "--serve", str(busy.getsockname()[1]), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("queuectl: error: cannot listen on 127.0.0.1:")
    assert result.stderr.count("\n") == 1
