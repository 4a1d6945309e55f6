"""Real processes on a real SQLite file: the supervisor, its workers and their jobs, driven through
the CLI exactly as a user would (``python -m queuectl ...``), state read back with ``--json`` or
through the store. Every wait is a poll with a deadline; every process is killed at teardown."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path
from shlex import quote
from typing import Iterator

import pytest

from queuectl.service import workers as worker_service

from .conftest import Queue, pid_alive, read_pid, wait_until

FAST = {"heartbeat": 0.2, "lease": 1}  # heartbeat first: it must stay <= lease / 2


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def worker_pid_of(worker_id: str) -> int:
    match = re.fullmatch(r"w(\d+)-[0-9a-f]+", worker_id)
    assert match, f"unexpected worker id {worker_id!r}"
    return int(match.group(1))


# --- 1. many jobs, many workers: exactly once each ---------------------------------------------


def test_many_jobs_four_workers_each_runs_exactly_once(queue: Queue, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    total = 240
    ids = [f"job-{n:03d}" for n in range(total)]
    sup = queue.start_workers(count=4)
    workers = {w.pid for w in queue.running_workers()}
    assert len(workers) == 4
    # two batches while the workers are idle: both must wake them
    half = total // 2
    for batch in (ids[:half], ids[half:]):
        specs = [{"id": i, "command": f"echo {i} $PPID >> {quote(str(ledger))}"} for i in batch]
        assert queue.enqueue_file(specs) == len(batch)

    wait_until(
        lambda: queue.counts().get("completed", 0) == total,
        60,
        message=lambda: f"{total} completed; counts {queue.counts()}\n{queue.logs()}",
    )

    entries = [line.split() for line in lines(ledger)]
    seen = Counter(entry[0] for entry in entries)
    missing = sorted(set(ids) - set(seen))
    doubled = sorted(i for i, n in seen.items() if n > 1)
    assert not missing, f"never ran: {missing}"
    assert not doubled, f"ran more than once: {doubled}"
    assert set(seen) == set(ids)
    runners = {int(entry[1]) for entry in entries}
    assert runners <= workers, "a job ran under a process that is not one of the workers"
    assert len(runners) >= 2, "all jobs ran on one worker: the others never claimed"

    listed = queue.cli_json("list", "--state", "completed", "--limit", "1000")
    assert sorted(job["id"] for job in listed) == ids
    assert all(job["attempts"] == 1 and job["exit_code"] == 0 and job["locked_by"] is None for job in listed)
    status = queue.cli_json("status")
    assert status["states"]["completed"] == total
    assert sum(status["states"].values()) == total

    sup.send_signal(signal.SIGTERM)
    assert queue.wait_exit(sup, 15) == 0
    assert not queue.cli_json("worker", "list"), "workers still registered as running"
    stopped = queue.cli_json("worker", "list", "--all")
    assert {w["pid"] for w in stopped} == workers
    assert all(w["state"] == "stopped" for w in stopped)
    wait_until(lambda: not any(pid_alive(p) for p in workers), 5, message="worker processes gone")


# --- 2. a worker SIGKILLed mid-job: its job comes back, its orphan is killed -------------------


def test_sigkilled_worker_job_is_recovered_and_orphan_killed(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST, backoff_base=1)  # recovery retry after 1 ** 1 = 1 s
    ledger, marker = tmp_path / "ledger", tmp_path / "first-attempt"
    shell_pid_file, child_pid_file = tmp_path / "shell.pid", tmp_path / "child.pid"
    command = (
        f"echo start >> {quote(str(ledger))}; "
        f"if [ -e {quote(str(marker))} ]; then echo second >> {quote(str(ledger))}; exit 0; fi; "
        f"touch {quote(str(marker))}; echo $$ > {quote(str(shell_pid_file))}; "
        f"sleep 30 & echo $! > {quote(str(child_pid_file))}; wait"
    )
    sup = queue.start_workers(count=2)
    job_id = queue.enqueue(command)

    wait_until(
        lambda: read_pid(shell_pid_file) and read_pid(child_pid_file),
        10,
        message=lambda: f"first attempt running\n{queue.logs()}",
    )
    shell_pid, child_pid = read_pid(shell_pid_file), read_pid(child_pid_file)
    assert shell_pid and child_pid and pid_alive(shell_pid) and pid_alive(child_pid)
    job = queue.show(job_id)
    assert job["state"] == "processing" and job["attempts"] == 1
    worker_pid = worker_pid_of(job["locked_by"])
    listed = {w["id"]: w for w in queue.cli_json("worker", "list")}
    assert listed[job["locked_by"]]["pid"] == worker_pid
    assert job_id in listed[job["locked_by"]]["current_jobs"]

    os.kill(worker_pid, signal.SIGKILL)

    # the supervisor (child subreaper) kills the orphaned job's process group at once
    wait_until(
        lambda: not pid_alive(shell_pid) and not pid_alive(child_pid),
        3,
        message=lambda: f"orphaned job processes {shell_pid}, {child_pid} gone\n{queue.logs()}",
    )

    done = queue.wait_state(job_id, "completed", 20)
    assert done.attempts == 2
    assert lines(ledger) == ["start", "start", "second"]
    assert sup.poll() is None, "the supervisor died with its worker"
    # the dead worker was replaced: two live workers again, the killed one not among them
    wait_until(
        lambda: len({w.pid for w in queue.running_workers()} - {worker_pid}) == 2,
        10,
        message="the killed worker restarted",
    )

    sup.send_signal(signal.SIGTERM)
    assert queue.wait_exit(sup, 15) == 0


# --- 3. SIGTERM lets the running job finish and claims nothing new -----------------------------


def test_sigterm_finishes_running_job_and_claims_nothing_new(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    ledger = tmp_path / "ledger"
    running = queue.enqueue(
        f"echo started >> {quote(str(ledger))}; sleep 1.5; echo done >> {quote(str(ledger))}",
        "--priority",
        "10",
    )
    waiting = queue.enqueue(f"echo must-not-run >> {quote(str(ledger))}")
    sup = queue.start_workers(count=1)

    wait_until(
        lambda: lines(ledger) == ["started"], 10, message=lambda: f"job started; ledger {lines(ledger)}\n{queue.logs()}"
    )
    sup.send_signal(signal.SIGTERM)
    signalled = time.time()

    assert queue.wait_exit(sup, 15) == 0
    assert lines(ledger) == ["started", "done"]
    first = queue.show(running)
    assert first["state"] == "completed" and first["exit_code"] == 0 and first["attempts"] == 1
    assert first["finished_at"] > signalled
    second = queue.show(waiting)
    assert second["state"] == "pending" and second["attempts"] == 0
    assert second["started_at"] is None and second["locked_by"] is None


# --- 4. retries with exponential backoff, then the DLQ, then dlq retry --------------------------


def test_failing_job_backs_off_then_dead_then_dlq_retry(queue: Queue, tmp_path: Path) -> None:
    base = 1.5
    queue.config(**FAST, backoff_base=base, backoff_jitter=0)  # the exact curve, to measure it
    ledger = tmp_path / "attempts"
    job_id = queue.enqueue(f"date +%s.%N >> {quote(str(ledger))}; exit 3", "--max-retries", "2")
    sup = queue.start_workers(count=1)

    dead = queue.wait_state(job_id, "dead", 30)
    assert dead.attempts == 3 and dead.exit_code == 3
    assert "exit code 3" in (dead.last_error or "")
    starts = [float(line) for line in lines(ledger)]
    assert len(starts) == 3, starts
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]  # consecutive pairs
    for attempt, gap in enumerate(gaps, start=1):
        delay = base**attempt  # the delay after attempt n is base ** n
        assert gap >= delay - 0.05, f"attempt {attempt + 1} came {gap:.3f}s after, before {delay}s"
        assert gap < delay + 5, f"attempt {attempt + 1} came {gap:.3f}s after, expected ~{delay}s"
    assert gaps[1] > gaps[0], f"backoff did not grow: {gaps}"

    dlq = queue.cli_json("dlq", "list")
    assert [job["id"] for job in dlq] == [job_id]

    sup.send_signal(signal.SIGTERM)  # stop first, or the worker would run it again at once
    assert queue.wait_exit(sup, 15) == 0
    assert queue.cli("dlq", "retry", job_id).stdout.strip() == f"requeued {job_id}"
    job = queue.show(job_id)
    assert job["state"] == "pending" and job["attempts"] == 0
    assert queue.cli_json("dlq", "list") == []


# --- 5. worker stop through the database, detached workers --------------------------------------


def test_worker_stop_wait_stops_detached_workers(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    log = tmp_path / "workers.log"
    queue.add_log(log)
    out = queue.cli("worker", "start", "--count", "2", "--detach", "--log", str(log)).stdout
    match = re.search(r"supervisor pid (\d+)", out)
    assert match, out
    sup_pid = int(match.group(1))
    queue.extra_groups.append(sup_pid)  # it leads its own session: killed at teardown if need be

    wait_until(
        lambda: len(queue.running_workers()) == 2, 15, message=lambda: f"2 detached workers running\n{queue.logs()}"
    )
    worker_pids = {w["pid"] for w in queue.cli_json("worker", "list")}
    assert len(worker_pids) == 2 and all(pid_alive(p) for p in worker_pids)

    stop = queue.cli("worker", "stop", "--wait", "--timeout", "20", check=False)
    assert stop.returncode == 0, f"{stop.stdout}\n{stop.stderr}\n{queue.logs()}"
    assert "asked 2 worker(s) to stop" in stop.stdout
    assert "all workers stopped" in stop.stdout
    assert queue.cli_json("worker", "list") == []

    wait_until(
        lambda: not pid_alive(sup_pid) and not any(pid_alive(p) for p in worker_pids),
        10,
        message=lambda: f"supervisor and workers gone\n{queue.logs()}",
    )
    wait_until(lambda: not queue.leftovers(), 5, message=lambda: f"no leftover processes: {queue.leftovers()}")


# --- 6. shutdown grace runs out: the job is stopped and requeued, not failed --------------------


def test_shutdown_grace_expiry_requeues_running_job(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST, shutdown_grace=0.5)
    pid_file = tmp_path / "job.pid"
    job_id = queue.enqueue(f"echo $$ > {quote(str(pid_file))}; sleep 30")
    sup = queue.start_workers(count=1)
    wait_until(lambda: read_pid(pid_file), 10, message=lambda: f"job started\n{queue.logs()}")
    job_pid = read_pid(pid_file)
    assert job_pid is not None

    sup.send_signal(signal.SIGTERM)
    assert queue.wait_exit(sup, 8) == 0  # 0.5 s grace, then SIGTERM to the job's group

    job = queue.show(job_id)
    assert job["state"] == "pending", job
    assert job["attempts"] == 0
    assert job["locked_by"] is None and job["lease_expires_at"] is None
    assert "shutdown" in (job["last_error"] or "")
    wait_until(lambda: not pid_alive(job_pid), 3, message=f"job process {job_pid} gone")


# --- 7. a job timeout kills the whole process group ---------------------------------------------


def test_job_timeout_kills_process_group(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST, kill_grace=1)
    child_file = tmp_path / "child.pid"
    job_id = queue.enqueue(
        f"sleep 30 & echo $! > {quote(str(child_file))}; wait",
        "--timeout",
        "1",
        "--max-retries",
        "0",
    )
    sup = queue.start_workers(count=1)
    wait_until(lambda: read_pid(child_file), 10, message=lambda: f"job started\n{queue.logs()}")
    child = read_pid(child_file)
    assert child is not None and pid_alive(child)

    dead = queue.wait_state(job_id, ("failed", "dead"), 15)
    assert dead.state == "dead" and dead.attempts == 1
    assert "timeout" in (dead.last_error or ""), dead.last_error
    wait_until(lambda: not pid_alive(child), 3, message=f"the job's child {child} gone")
    assert sup.poll() is None and len(queue.running_workers()) == 1

    sup.send_signal(signal.SIGTERM)
    assert queue.wait_exit(sup, 15) == 0


# --- 8. one worker, several jobs at once ---------------------------------------------------------


def test_concurrency_runs_jobs_in_parallel(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    ledger = tmp_path / "ledger"
    led = quote(str(ledger))
    specs = [
        {
            "id": f"par-{n}",
            "command": f"echo par-{n} start $(date +%s.%N) $PPID >> {led}; sleep 1; "
            f"echo par-{n} end $(date +%s.%N) $PPID >> {led}",
        }
        for n in range(4)
    ]
    assert queue.enqueue_file(specs) == 4
    sup = queue.start_workers("--concurrency", "4", count=1)

    wait_until(
        lambda: queue.counts().get("completed", 0) == 4,
        20,
        message=lambda: f"4 completed; {queue.counts()}\n{queue.logs()}",
    )
    records = [line.split() for line in lines(ledger)]
    starts = {r[0]: float(r[2]) for r in records if r[1] == "start"}
    ends = {r[0]: float(r[2]) for r in records if r[1] == "end"}
    assert set(starts) == set(ends) == {f"par-{n}" for n in range(4)}
    assert max(starts.values()) < min(ends.values()), f"not all 4 overlapped: {records}"
    workers = queue.running_workers()
    assert len(workers) == 1 and workers[0].concurrency == 4
    assert {int(r[3]) for r in records} == {workers[0].pid}

    sup.send_signal(signal.SIGTERM)
    assert queue.wait_exit(sup, 15) == 0


# --- 9. per-job cwd and env; the database URL never reaches a job; a missing cwd -----------------


def test_job_cwd_env_and_missing_cwd(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    missing = tmp_path / "no-such-dir"
    after = tmp_path / "after.txt"
    good = queue.enqueue(
        'pwd > where.txt; echo "STAGE=$STAGE" >> where.txt; env > env.txt', "--cwd", str(workdir), "--env", "STAGE=prod"
    )
    bad = queue.enqueue("echo should-not-run", "--cwd", str(missing), "--max-retries", "0")
    later = queue.enqueue(f"echo ok > {quote(str(after))}")
    sup = queue.start_workers(count=1)
    worker_ids = {w.id for w in queue.running_workers()}

    queue.wait_state(later, "completed", 15)
    assert queue.show(good)["state"] == "completed"
    assert (workdir / "where.txt").read_text().splitlines() == [str(workdir), "STAGE=prod"]
    env = dict(line.split("=", 1) for line in (workdir / "env.txt").read_text().splitlines() if "=" in line)
    assert env.get("STAGE") == "prod"
    assert "QUEUECTL_DB" not in env, "the database URL leaked into the job's environment"
    assert not [key for key in env if key.startswith("QUEUECTL_") and key != "QUEUECTL_PROGRESS_FD"]  # its own channel
    assert queue.url not in (workdir / "env.txt").read_text()

    failed = queue.show(bad)
    assert failed["state"] == "dead" and failed["attempts"] == 1
    assert failed["last_error"] and "working directory" in failed["last_error"]
    assert str(missing) in failed["last_error"] and "does not exist" in failed["last_error"]
    assert after.read_text().strip() == "ok"
    # the same worker carried on: not crashed and restarted
    assert {w.id for w in queue.running_workers()} == worker_ids

    sup.send_signal(signal.SIGTERM)
    assert queue.wait_exit(sup, 15) == 0


# --- extra: the second signal hurries; a job that ignores SIGTERM gets SIGKILL ------------------


def test_second_sigterm_hurries_and_kill_grace_ends_stubborn_job(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST, kill_grace=0.5)  # shutdown-grace stays at its default, 30 s
    pid_file = tmp_path / "job.pid"
    job_id = queue.enqueue(f"trap '' TERM; echo $$ > {quote(str(pid_file))}; while :; do sleep 0.1; done")
    sup = queue.start_workers(count=1)
    wait_until(lambda: read_pid(pid_file), 10, message=lambda: f"job started\n{queue.logs()}")
    job_pid = read_pid(pid_file)
    assert job_pid is not None

    sup.send_signal(signal.SIGTERM)
    wait_until(
        lambda: [w.state for w in worker_service.list_workers(queue.store)] == ["stopping"],
        5,
        message=lambda: f"the worker stopping after the first signal\n{queue.logs()}",
    )
    assert sup.poll() is None and pid_alive(job_pid), "the first signal must let the job run on"
    assert queue.state(job_id) == "processing"

    sup.send_signal(signal.SIGTERM)  # hurry: stop the job now (SIGTERM, ignored; then SIGKILL)
    assert queue.wait_exit(sup, 8) == 0
    job = queue.show(job_id)
    assert job["state"] == "pending" and job["attempts"] == 0, job
    wait_until(lambda: not pid_alive(job_pid), 3, message=f"job process {job_pid} gone")


# --- extra: Ctrl-C reaches the whole foreground group: still one graceful stop -----------------


def test_sigint_to_process_group_is_one_graceful_stop(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST)
    ledger = tmp_path / "ledger"
    job_id = queue.enqueue(f"echo started >> {quote(str(ledger))}; sleep 1; echo done >> {quote(str(ledger))}")
    sup = queue.start_workers(count=2)
    wait_until(lambda: lines(ledger) == ["started"], 10, message=lambda: f"job started\n{queue.logs()}")

    os.killpg(sup.pid, signal.SIGINT)  # as a terminal's Ctrl-C: supervisor and workers alike
    assert queue.wait_exit(sup, 15) == 0
    assert lines(ledger) == ["started", "done"]
    assert queue.show(job_id)["state"] == "completed"
    assert "second signal" not in queue.logs(), "one Ctrl-C was taken for two"


# --- extra: a job starts with the signal dispositions of a plain shell ---------------------------


def ignored_signals(path: Path) -> set[int]:
    """The signals a process ignored, from the ``SigIgn`` mask it wrote (hex, bit n-1 = signal n)."""
    mask = int(path.read_text().strip(), 16)
    return {bit + 1 for bit in range(64) if mask >> bit & 1}


@pytest.fixture(scope="module")
def job_signals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[set[int], str]]]:
    """Run two jobs once, one per start path (no cwd: posix_spawn; --cwd: Popen); for each, the
    signals its shell started with ignored, and its output (``yes | head -n 1``)."""
    root = tmp_path_factory.mktemp("signals")
    q = Queue(root)
    try:
        q.config(poll_interval=0.2, **FAST)
        workdir = root / "wd"
        workdir.mkdir()
        record = "awk '/^SigIgn/ {print $2}' /proc/$$/status > sigign-$PATH_KIND.txt; yes | head -n 1"
        ids = {
            "no-cwd": q.enqueue(f"cd {quote(str(workdir))}; {record}", "--env", "PATH_KIND=no-cwd"),
            "with-cwd": q.enqueue(record, "--cwd", str(workdir), "--env", "PATH_KIND=with-cwd"),
        }
        sup = q.start_workers(count=1)
        for job_id in ids.values():
            q.wait_state(job_id, "completed", 15)
        sup.send_signal(signal.SIGTERM)
        assert q.wait_exit(sup, 15) == 0
        yield {
            kind: (ignored_signals(workdir / f"sigign-{kind}.txt"), q.show(job_id)["output"])
            for kind, job_id in ids.items()
        }
    finally:
        q.cleanup()


@pytest.mark.parametrize(
    "kind",
    [
        "no-cwd",
        "with-cwd",
    ],
)
def test_job_does_not_inherit_ignored_sigpipe(job_signals: dict[str, tuple[set[int], str]], kind: str) -> None:
    ignored, output = job_signals[kind]
    assert signal.SIGPIPE not in ignored, f"the job runs with SIGPIPE ignored (SigIgn {ignored})"
    assert signal.SIGXFSZ not in ignored, f"the job runs with SIGXFSZ ignored (SigIgn {ignored})"
    assert "Broken pipe" not in output, output


def test_job_does_not_inherit_ignored_sigint(job_signals: dict[str, tuple[set[int], str]]) -> None:
    ignoring = [kind for kind, (ignored, _) in job_signals.items() if signal.SIGINT in ignored]
    assert not ignoring, f"jobs started with SIGINT ignored: {ignoring}"


# --- extra: a job that leaves a background process holding its output ----------------------------


def test_background_child_holding_output_does_not_crash_worker(queue: Queue, tmp_path: Path) -> None:
    queue.config(**FAST, backoff_base=1)
    ledger = tmp_path / "ledger"
    led = quote(str(ledger))
    first = queue.enqueue(f"sleep 30 & echo first >> {led}")  # the shell exits, sleep keeps stdout
    later = [queue.enqueue(f"echo {name} >> {led}") for name in ("second", "third")]
    sup = queue.start_workers(count=1)
    worker_ids = {w.id for w in queue.running_workers()}

    for job_id in (first, *later):
        queue.wait_state(job_id, "completed", 15)
    sup.send_signal(signal.SIGTERM)
    assert queue.wait_exit(sup, 15) == 0

    assert {w["id"] for w in queue.cli_json("worker", "list", "--all")} == worker_ids, queue.logs()
    assert [queue.show(job_id)["attempts"] for job_id in (first, *later)] == [1, 1, 1]
    assert sorted(lines(ledger)) == ["first", "second", "third"]
