"""Helpers for the multi-process integration tests: a private queue per test, the real CLI as a
subprocess, supervisors in their own session, polling with deadlines, and a cleanup that kills
every process the test left behind (found by the test's private XDG_DATA_HOME in its environment,
which workers pass on to supervisors, workers and jobs alike)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from queuectl.service import workers as worker_service

from .procs import kill_marked, pid_alive, processes_with_env

__all__ = ["Queue", "pid_alive", "read_pid", "wait_until"]

if not sys.platform.startswith("linux"):
    pytest.skip("integration tests need Linux (/proc, subreaper)", allow_module_level=True)

CLI_TIMEOUT_S = 30.0


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, message: str | Callable[[], str] = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s waiting for: {text}")
        time.sleep(interval)


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _default_signals() -> None:
    """In the supervisor's child, before exec: SIGINT and SIGQUIT as a terminal gives them (a
    test runner started in the background may have them ignored, and ignoring is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class Queue:
    """One test's private queue: its database file, environment, CLI and processes."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.db_path = root / "queue.db"
        self.url = url or f"sqlite:///{self.db_path}"  # sqlite:////abs/path, or a server's URL
        assert url or self.url.startswith("sqlite:////")
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
        self.env.update({"QUEUECTL_DB": self.url, "XDG_DATA_HOME": str(root), "PYTHONUNBUFFERED": "1"})
        self.marker = f"XDG_DATA_HOME={root}"
        self.supervisors: list[subprocess.Popen[bytes]] = []
        self.extra_groups: list[int] = []  # process groups to kill at teardown (detached runs)
        self._store: Any = None
        self._logs: list[Path] = []

    # --- the CLI ----------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "queuectl", *args],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"queuectl {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def config(self, **values: Any) -> None:
        """``config set`` each key (underscores become dashes), in the order given."""
        for key, value in values.items():
            self.cli("config", "set", key.replace("_", "-"), str(value))

    def enqueue(self, command: str, *options: str) -> str:
        return self.cli("enqueue", command, *options).stdout.strip()

    def enqueue_file(self, specs: list[dict[str, Any]]) -> int:
        path = self.root / f"jobs-{len(specs)}-{time.monotonic_ns()}.jsonl"
        path.write_text("".join(json.dumps(spec) + "\n" for spec in specs))
        out = self.cli("enqueue", "--file", str(path)).stderr  # the ids on stdout, the count on stderr
        match = re.search(r"enqueued (\d+) job", out)
        assert match, out
        return int(match.group(1))

    def show(self, job_id: str) -> dict[str, Any]:
        """``show --json``, its RFC 3339 times read back as epoch seconds (to the millisecond)."""
        from datetime import datetime, timezone

        from queuectl.service.shapes import JOB_TIMES

        def epoch(text: str | None) -> float | None:
            if text is None:
                return None
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()

        job = self.cli_json("show", job_id)
        return {key: epoch(value) if key in JOB_TIMES else value for key, value in job.items()}

    # --- direct reads (fast enough to poll) ---------------------------------------------------

    @property
    def store(self) -> Any:
        if self._store is None:
            from queuectl.store import open_store

            self._store = open_store(self.url)
        return self._store

    def job(self, job_id: str) -> Any:
        return self.store.get(job_id)

    def state(self, job_id: str) -> str | None:
        job = self.job(job_id)
        return job.state if job else None

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for per_state in self.store.counts().values():
            for state, count in per_state.items():
                totals[state] = totals.get(state, 0) + count
        return totals

    def running_workers(self) -> list[Any]:
        return [w for w in worker_service.list_workers(self.store) if w.state == "running"]

    def wait_state(self, job_id: str, states: str | tuple[str, ...], timeout: float) -> Any:
        wanted = (states,) if isinstance(states, str) else states
        return wait_until(
            lambda: (job := self.job(job_id)) is not None and job.state in wanted and job,
            timeout,
            message=lambda: f"job {job_id} in {wanted}, it is {self.state(job_id)}\n{self.logs()}",
        )

    # --- supervisors --------------------------------------------------------------------------

    def start_workers(self, *args: str, count: int = 1, wait_ready: bool = True) -> subprocess.Popen[bytes]:
        """``queuectl worker start --count N ...`` in its own session; waits for N workers."""
        log_path = self.root / f"supervisor-{len(self.supervisors)}.log"
        self._logs.append(log_path)
        before = {w.id for w in worker_service.list_workers(self.store)}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "worker", "start", "--count", str(count), *args],
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_default_signals,
            )
        self.supervisors.append(proc)
        if wait_ready:
            wait_until(
                lambda: len([w for w in self.running_workers() if w.id not in before]) >= count,
                15,
                message=lambda: f"{count} worker(s) registered\n{self.logs()}",
            )
        return proc

    def logs(self) -> str:
        parts = []
        for path in self._logs:
            try:
                parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')}")
            except OSError:
                pass
        return "\n".join(parts)

    def add_log(self, path: Path) -> None:
        self._logs.append(path)

    def wait_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor {proc.pid} still running {timeout:g}s later\n{self.logs()}") from None

    # --- teardown -----------------------------------------------------------------------------

    def leftovers(self) -> list[int]:
        return processes_with_env(self.marker)

    def cleanup(self) -> None:
        for proc in self.supervisors:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for pgid in self.extra_groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        kill_marked(self.marker)  # jobs run in their own sessions: found by the test's marker
        for proc in self.supervisors:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._store is not None:
            self._store.close()
        from queuectl.store.wake import wake_dir_for

        wake_dir = Path(wake_dir_for(str(self.db_path)))
        if self.root not in wake_dir.parents:  # a long path puts it in the temp folder
            shutil.rmtree(wake_dir, ignore_errors=True)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = Queue(tmp_path)
    q.cli("config", "set", "poll-interval", "0.2")  # creates the database, too
    try:
        yield q
    finally:
        q.cleanup()


@pytest.fixture
def pg_queue(tmp_path: Path) -> Iterator[Queue]:
    """A private queue on the real PostgreSQL server (a fresh schema; see tests/pgserver.py)."""
    from pgserver import fresh_schema, postgres_url

    with fresh_schema(postgres_url()) as url:
        q = Queue(tmp_path, url)
        q.cli("config", "set", "poll-interval", "0.2")  # creates the tables, too
        try:
            yield q
        finally:
            q.cleanup()
