"""Benchmark queuectl against baselines measured in the same invocation.

Run it from the repository with the Python that has queuectl installed:

    python scripts/bench.py                   # full sizes, 3 runs (several minutes)
    python scripts/bench.py --quick           # tiny sizes, 1 run: a smoke test for CI (< 60 s)
    python scripts/bench.py --only drain,cli --runs 5 --json before.json
    python scripts/bench.py --mongodb-url mongodb://localhost:27017   # also figures 1-3 on MongoDB
    python scripts/bench.py --db postgresql://user:pass@host/db   # also drain, pickup, bulk, scale on PostgreSQL

The machine may be shared and noisy, so every figure is paired with a baseline measured in the
same run (right before or after it) and the table shows the ratio (and difference) to that
baseline: compare *ratios* between commits, not raw seconds. Scenarios are interleaved across
runs (run 1: A B C, run 2: B C A, ...) so that a slow minute hurts every scenario a little
rather than one a lot.

Scenarios (``--only`` takes these names, comma separated):

  drain   N ``true`` jobs enqueued with ``enqueue --file``, then ``worker start --burst`` with
          count x concurrency = 2x1, 1x2 (2 slots) and 2x4 (8 slots); timed from start until the
          supervisor exits. Baseline: ``xargs -P K -I{} sh -c true`` over N lines, same K.
  pickup  idle workers already running; ``queuectl enqueue "date +%s.%N > FILE"``, measured from
          the moment the enqueue process returned to the time the job wrote. Negative when the
          worker starts the job before the enqueue process has finished exiting; "pickup after
          API enqueue" (queuectl.service.jobs.enqueue in this process) is the worker's own latency.
          Baseline: spawning ``sh -c 'date +%s.%N > FILE'`` directly.
  follow  ``logs --follow`` of a job writing a ``date +%s.%N`` line every 0.2 s, on the worker's
          host: delay from each line written to it printed (p50, p95; target p95 <= 500 ms).
          Baseline: the same lines read straight from the script's pipe.
  cli     wall time of ``queuectl enqueue true`` and ``queuectl --help`` against
          ``python -c pass`` and ``python -c "import typer"`` (same interpreter).
  idle    supervisor + 2 idle workers: VmRSS of each worker and CPU % of one core over a window.
          Baseline: an idle ``python -c "import time; time.sleep(...)"`` over the same window;
          the worker's RSS also against a floor: a python holding only the standard library a
          SQLite worker needs (sqlite3, selectors, socket, json, ctypes) with the queue open.
  bulk    ``enqueue --file`` of many lines: jobs/s and the peak RSS of that process (wait4, through
          a small wrapper process so that the bench's own RSS does not leak into the figure).
          Baseline: the same rows inserted with sqlite3 ``executemany`` into the same schema.
  scale   a store of --scale-jobs mostly completed jobs (built once per invocation): claim +
          finish latency, ``queuectl status`` and ``queuectl list --limit 50``. Baseline: the
          same on a store holding only the pending jobs.
  http    ``queuectl serve``: POST /api/jobs with 8 keep-alive clients (requests/s, p50, p99),
          batch submission (jobs/s) and GET /api/jobs?state=... on the scale store. Baseline:
          GET /healthz of the same server (scripts/bench_http.py says how).
  reads   status, one dashboard refresh, one /metrics scrape, list --state S --limit 50 and show
          on a store of 1M jobs (--reads-jobs N, e.g. 10M) filled by raw SQL. Baseline: the same
          on a 1,000-job store (scripts/bench_reads.py says how).

Every process runs with a fresh database, XDG_DATA_HOME in a temporary folder, and compiled
bytecode in a private PYTHONPYCACHEPREFIX (PYTHONDONTWRITEBYTECODE is dropped: with it, an
editable checkout would recompile every queuectl module in every process, as no user would).

Reading the table: ``median`` and ``min-max`` are over every sample of every run; ``ratio`` is
the median over runs of (figure / baseline) measured in the same run; ``delta`` likewise for the
difference. ``target`` rows say PASS or MISS; a MISS does not change the exit status. The exit
status is 1 when a correctness check failed (a job lost, not completed, a command failed), 130 on
Ctrl-C, 0 otherwise. ``--json PATH`` writes every sample, for comparison between commits.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from queuectl.core import lifecycle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ("drain", "pickup", "follow", "cli", "idle", "bulk", "scale", "http", "reads")
MONGO_SCENARIOS = ("drain", "pickup", "cli")
POSTGRES_SCENARIOS = ("drain", "pickup", "bulk", "scale")  # each test in its own schema, dropped after
DRAIN_SHAPES = ((2, 1), (1, 2), (2, 4))  # (worker processes, concurrency each)
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    drain_jobs: int
    pickup_samples: int
    cli_reps: int  # samples of each command per run
    idle_seconds: float
    bulk_lines: int
    bulk_big_lines: int  # issue 18: 1,000,000 lines, staged in chunks (over BULK_ONE_TRANSACTION)
    scale_jobs: int
    scale_pending: int
    scale_claims: int  # per run and store
    scale_reps: int  # CLI samples per run and store


FULL = Sizes(
    drain_jobs=2000,
    pickup_samples=30,
    cli_reps=5,
    idle_seconds=10.0,
    bulk_lines=100_000,
    bulk_big_lines=1_000_000,
    scale_jobs=1_000_000,
    scale_pending=1000,
    scale_claims=200,
    scale_reps=3,
)
QUICK = Sizes(
    drain_jobs=200,
    pickup_samples=5,
    cli_reps=2,
    idle_seconds=3.0,
    bulk_lines=5000,
    bulk_big_lines=60_000,
    scale_jobs=20_000,
    scale_pending=300,
    scale_claims=50,
    scale_reps=1,
)


class BenchFailure(Exception):
    """A correctness check failed: jobs lost or not completed, a command failed or hung."""


# --- processes: every one we start is in its own session, and is killed on the way out ---------


class Processes:
    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.live.append(proc)
        return proc

    @staticmethod
    def kill_group(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> Optional[int]:
        """SIGTERM the leader (a supervisor stops its workers), then SIGKILL whatever is left."""
        code = proc.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(grace)
            except subprocess.TimeoutExpired:
                code = None
        self.kill_group(proc)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.forget(proc)
        return code

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ValueError):
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.live)):
            self.stop(proc, grace=3.0)


PROCS = Processes()


@dataclass
class Ran:
    """One finished command: wall seconds, exit code, peak RSS (KiB) and CPU seconds (with children).

    ``maxrss_kb`` straight from run_cmd includes this process's own RSS (see run_isolated).
    """

    cmd: list[str]
    wall: float
    code: int
    maxrss_kb: int
    cpu: float
    out: str
    err: str
    returned_at: float  # time.time() right after it was reaped

    def check(self, what: str) -> Ran:
        if self.code != 0:
            tail = (self.err or self.out).strip().splitlines()[-5:]
            raise BenchFailure(f"{what}: exit code {self.code}: {' | '.join(tail)}")
        return self


def run_cmd(
    cmd: list[str], env: dict[str, str], cwd: str, timeout: float = 600.0, stdin_path: Optional[str] = None
) -> Ran:
    """Run a command to the end and measure it with wait4 (its own rusage, not the bench's)."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(tempfile.TemporaryFile())
        err = stack.enter_context(tempfile.TemporaryFile())
        stdin: Any = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        timed_out = threading.Event()
        start = time.perf_counter()
        proc = PROCS.spawn(cmd, env=env, cwd=cwd, stdin=stdin, stdout=out, stderr=err)

        def on_timeout() -> None:
            timed_out.set()
            PROCS.kill_group(proc)

        timer = threading.Timer(timeout, on_timeout)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        returned_at = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        PROCS.kill_group(proc)  # leftovers in its group, if any
        PROCS.forget(proc)
        out.seek(0)
        err.seek(0)
        ran = Ran(
            cmd,
            wall,
            proc.returncode,
            usage.ru_maxrss,
            usage.ru_utime + usage.ru_stime,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            returned_at,
        )
    if timed_out.is_set():
        raise BenchFailure(f"{' '.join(cmd[-4:])}: still running after {timeout:g}s, killed")
    return ran


# Linux counts the RSS of the process that called exec into the child's ru_maxrss (exec_mmap keeps
# the old mm's high-water mark), so a child of this ~30 MB bench would never report less than
# ~30 MB. A small interpreter in between (python -S -I, ~7 MB) forks the command and reports its
# wait4 rusage: a floor of ~7 MB instead, measured and shown as its own figure.
_RUSAGE_WRAPPER = r"""
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as handle:
    handle.write(f"{usage.ru_maxrss} {wall} {usage.ru_utime + usage.ru_stime}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_isolated(python: str, cmd: list[str], env: dict[str, str], cwd: str) -> Ran:
    """run_cmd through the wrapper: peak RSS, wall and CPU of ``cmd`` alone."""
    report = os.path.join(cwd, f".rusage-{time.monotonic_ns()}")
    ran = run_cmd([python, "-S", "-I", "-c", _RUSAGE_WRAPPER, report, *cmd], env, cwd)
    with contextlib.suppress(OSError, ValueError), open(report, encoding="ascii") as handle:
        maxrss, wall, cpu = handle.read().split()
        ran.maxrss_kb, ran.wall, ran.cpu = int(maxrss), float(wall), float(cpu)
        ran.cmd = cmd
        return ran
    raise BenchFailure(f"{' '.join(cmd[:3])}: no rusage report (exit code {ran.code}: {ran.err.strip()[-200:]})")


# --- results: samples per figure and run; ratios are paired within a run -------------------------


@dataclass(frozen=True)
class Target:
    on: str  # value | ratio | delta
    limit: float  # the figure must be <= limit
    text: str

    def met(self, value: float) -> bool:
        return value <= self.limit


@dataclass(frozen=True)
class AtLeast(Target):
    """A target the figure must reach (a throughput), rather than stay under."""

    def met(self, value: float) -> bool:
        return value >= self.limit


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    baseline: Optional[str] = None
    target: Optional[Target] = None
    by_run: dict[int, list[float]] = field(default_factory=dict)

    def samples(self) -> list[float]:
        return [v for run in sorted(self.by_run) for v in self.by_run[run]]

    def run_median(self, run: int) -> Optional[float]:
        values = self.by_run.get(run)
        return statistics.median(values) if values else None


class Results:
    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []

    def define(
        self, key: str, label: str, unit: str, baseline: Optional[str] = None, target: Optional[Target] = None
    ) -> str:
        if key not in self.figures:
            self.figures[key] = Figure(key, label, unit, baseline, target)
        return key

    def add(self, key: str, run: int, value: float) -> None:
        self.figures[key].by_run.setdefault(run, []).append(value)

    def paired(self, fig: Figure, how: Callable[[float, float], float]) -> Optional[float]:
        """Median over runs of how(figure, baseline), both taken from the same run."""
        if fig.baseline is None or fig.baseline not in self.figures:
            return None
        base = self.figures[fig.baseline]
        values = []
        for run in fig.by_run:
            mine, theirs = fig.run_median(run), base.run_median(run)
            if mine is None or theirs is None or (how is _ratio and (mine <= 0 or theirs <= 0)):
                continue  # a ratio of a negative latency or of zero CPU means nothing
            values.append(how(mine, theirs))
        return statistics.median(values) if values else None

    def summary(self, fig: Figure) -> dict[str, Any]:
        samples = fig.samples()
        ratio = self.paired(fig, _ratio)
        delta = self.paired(fig, lambda a, b: a - b)
        row: dict[str, Any] = {
            "label": fig.label,
            "unit": fig.unit,
            "baseline": fig.baseline,
            "samples_by_run": {str(run): values for run, values in sorted(fig.by_run.items())},
            "median": statistics.median(samples) if samples else None,
            "min": min(samples) if samples else None,
            "max": max(samples) if samples else None,
            "ratio": ratio,
            "delta": delta,
            "target": None,
            "status": None,
        }
        if fig.target is not None:
            judged = {"value": row["median"], "ratio": ratio, "delta": delta}[fig.target.on]
            row["target"] = fig.target.text
            row["status"] = None if judged is None else ("PASS" if fig.target.met(judged) else "MISS")
        return row


def _ratio(a: float, b: float) -> float:
    return a / b


# --- queues: a fresh database per scenario -----------------------------------------------------


@dataclass
class Queue:
    backend: str
    url: str
    dir: str
    env: dict[str, str]

    def counts(self) -> dict[str, int]:
        """Jobs per state, read through queuectl's own store (all queues)."""
        from queuectl.store import open_store

        store = open_store(self.url)
        try:
            totals: dict[str, int] = {}
            for per_state in store.counts().values():
                for state, count in per_state.items():
                    totals[state] = totals.get(state, 0) + count
            return totals
        finally:
            store.close()

    def expect_all(self, state: str, count: int, what: str) -> None:
        totals = self.counts()
        others = {s: c for s, c in totals.items() if s != state and c}
        if totals.get(state, 0) != count or others:
            raise BenchFailure(f"{what}: expected {count} {state} job(s), the store holds {totals or 'none'}")


class Bench:
    """Everything the scenarios share: options, sizes, where queuectl is, results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        sizes = QUICK if args.quick else FULL
        if args.scale_jobs:
            sizes = dataclasses.replace(sizes, scale_jobs=args.scale_jobs)
        self.sizes = sizes
        self.queuectl = queuectl_command()
        self.python = queuectl_python(self.queuectl)
        self.root = tempfile.mkdtemp(prefix="qbench-")
        self.pycache = os.path.join(self.root, "pycache")
        self.results = Results()
        self.mongo_url: Optional[str] = args.mongodb_url or os.environ.get("QUEUECTL_BENCH_MONGODB_URL")
        self.pg_url: Optional[str] = args.db or os.environ.get("QUEUECTL_BENCH_POSTGRES_URL")
        self.pg_scale_url: Optional[str] = None
        self.scale_store: Optional[str] = None
        self.scale_build_seconds: Optional[float] = None
        self._counter = 0

    def q(self, *args: str) -> list[str]:
        return [*self.queuectl, *args]

    def fresh_queue(self, backend: str, label: str) -> Queue:
        self._counter += 1
        folder = os.path.join(self.root, f"{self._counter:03d}-{label}")
        os.makedirs(os.path.join(folder, "xdg"))
        if backend == "sqlite":
            url = f"sqlite:///{os.path.join(folder, 'q.db')}"
        elif backend == "postgres":
            assert self.pg_url is not None
            url = pg_schema_url(self.pg_url, f"qbench_{os.getpid()}_{self._counter}")
        else:
            assert self.mongo_url is not None
            url = mongo_url_with_db(self.mongo_url, f"qbench_{os.getpid()}_{self._counter}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_") and k != "PYTHONDONTWRITEBYTECODE"}
        # Compiled bytecode, as an installed package has it, without writing into the checkout
        env.update(
            {"QUEUECTL_DB": url, "XDG_DATA_HOME": os.path.join(folder, "xdg"), "PYTHONPYCACHEPREFIX": self.pycache}
        )
        return Queue(backend, url, folder, env)

    @contextlib.contextmanager
    def queue(self, backend: str, label: str) -> Iterator[Queue]:
        queue = self.fresh_queue(backend, label)
        try:
            yield queue
        finally:
            if backend == "mongodb":
                drop_mongo_db(queue.url)
            if backend == "postgres":
                drop_pg_schema(queue.url)
            shutil.rmtree(queue.dir, ignore_errors=True)


def queuectl_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "queuectl")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "queuectl"]


def queuectl_python(command: list[str]) -> str:
    """The interpreter the queuectl command runs on (its shebang), for fair python baselines."""
    if len(command) == 1:
        with contextlib.suppress(OSError, UnicodeDecodeError), open(command[0], encoding="utf-8") as handle:
            first = handle.readline()
            if first.startswith("#!"):
                interpreter = first[2:].strip().split()[0]
                if os.path.isfile(interpreter):
                    return interpreter
    return sys.executable


def pg_schema_url(url: str, schema: str) -> str:
    """A URL on a new schema of the server's database (created here, dropped by drop_pg_schema)."""
    from urllib.parse import quote

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"


def analyze_pg(url: str) -> None:
    """Statistics for a freshly filled store, as autovacuum gathers them within a minute on a server."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def drop_pg_schema(url: str) -> None:
    from urllib.parse import unquote

    import psycopg

    base, _, options = url.rpartition("?options=")
    schema = unquote(options).partition("=")[2]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def mongo_url_with_db(url: str, db_name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + db_name, parts.query, parts.fragment))


def drop_mongo_db(url: str) -> None:
    import pymongo
    from pymongo.uri_parser import parse_uri

    with contextlib.suppress(Exception):
        client: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(parse_uri(url)["database"])
        finally:
            client.close()


def redact(url: str) -> str:
    from queuectl.store import redact_url

    return redact_url(url)


def check_mongo(url: str) -> None:
    import pymongo

    client: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


# --- helpers shared by scenarios ----------------------------------------------------------------


def write_lines(path: str, count: int, make: Callable[[int], str]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(make(i) + "\n" for i in range(count))
    return path


def enqueue_file(bench: Bench, queue: Queue, path: str, count: int) -> Ran:
    ran = run_cmd(bench.q("enqueue", "--file", path), queue.env, queue.dir).check("enqueue --file")
    if f"enqueued {count} job" not in ran.err:  # the ids go to stdout, the count to stderr
        raise BenchFailure(f"enqueue --file: expected 'enqueued {count} job(s)', got {ran.err.strip()!r}")
    return ran


def start_workers(bench: Bench, queue: Queue, count: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start ``worker start --count N`` in the background; wait until ``worker list`` shows them."""
    # Create the database first: two processes opening a brand-new file at once can fail on
    # PRAGMA journal_mode=WAL ("database is locked", at once), which is not what we measure here.
    run_cmd(bench.q("status"), queue.env, queue.dir).check("status (creating the database)")
    log = open(os.path.join(queue.dir, "workers.log"), "wb")
    with log:
        proc = PROCS.spawn(
            bench.q("worker", "start", "--count", str(count)), env=queue.env, cwd=queue.dir, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchFailure(f"worker start exited early ({proc.returncode}): {log_tail(queue)}")
        ran = run_cmd(bench.q("worker", "list", "--json"), queue.env, queue.dir).check("worker list")
        pids = [w["pid"] for w in json.loads(ran.out) if w.get("state") == "running"]
        if len(pids) >= count:
            return proc, pids
        time.sleep(0.1)
    PROCS.stop(proc)
    raise BenchFailure(f"{count} worker(s) not registered after 60s: {log_tail(queue)}")


def stop_workers(proc: subprocess.Popen[bytes], queue: Queue) -> None:
    code = PROCS.stop(proc)
    if code != 0:
        raise BenchFailure(f"worker start: exit code {code} on SIGTERM: {log_tail(queue)}")


def log_tail(queue: Queue) -> str:
    with contextlib.suppress(OSError), open(os.path.join(queue.dir, "workers.log"), errors="replace") as handle:
        return " | ".join(handle.read().strip().splitlines()[-5:])
    return "(no log)"


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchFailure(f"no VmRSS for pid {pid}")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: an actual sample, no interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def wait_for_stamp(path: str, timeout: float = 30.0) -> float:
    """The ``date +%s.%N`` a job wrote into ``path``, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="ascii") as handle:
                text = handle.read()
            if text.endswith("\n"):
                return float(text)
        time.sleep(0.001)
    raise BenchFailure(f"the job writing {path} did not run within {timeout:g}s")


def prefix(backend: str) -> str:
    return "" if backend == "sqlite" else f"{backend} "


def warm_up(bench: Bench) -> None:
    """Run every kind of process once, untimed: fills the bytecode cache and the page cache."""
    with bench.queue("sqlite", "warm-up") as queue:
        for cmd in (
            [bench.python, "-c", "import typer"],
            bench.q("--help"),
            bench.q("enqueue", "true"),
            bench.q("status"),
            bench.q("list"),
            bench.q("worker", "list", "--json"),
            bench.q("worker", "start", "--burst"),
        ):
            run_cmd(cmd, queue.env, queue.dir, timeout=120).check(f"warm-up: {' '.join(cmd[-2:])}")
        queue.expect_all("completed", 1, "warm-up")


# --- 1. drain -----------------------------------------------------------------------------------


# The floor under a drain: K python loops on one SQLite file (WAL, synchronous=NORMAL), each
# job one transaction that records the last outcome and claims the next row (the shape of a
# worker's busy path), then posix_spawn("sh -c true") and a wait. No queue beyond that: no
# indexes but one, no events, counters, leases, heartbeats or captured output. What a drain
# costs above it is queuectl's; what it costs above xargs, the floor's too.
_DRAIN_FLOOR_LOOP = r"""
import os, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute("PRAGMA synchronous=NORMAL")
env, me, current = dict(os.environ), os.getpid(), None
while True:
    delay = 5e-5
    while True:  # the write lock, asked for again in fine steps (SQLite's own handler sleeps ms)
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError:
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)
    if current is not None:
        conn.execute("UPDATE q SET state = 2 WHERE id = ?", (current,))
    row = conn.execute("SELECT id FROM q WHERE state = 0 ORDER BY id LIMIT 1").fetchone()
    if row is not None:
        conn.execute("UPDATE q SET state = 1, worker = ? WHERE id = ?", (me, row[0]))
    conn.execute("COMMIT")
    if row is None:
        break
    current = row[0]
    os.waitpid(os.posix_spawn("/bin/sh", ["sh", "-c", "true"], env), 0)
"""
_DRAIN_FLOOR = r"""
import sqlite3, subprocess, sys
path, jobs, loops, loop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, worker INTEGER)")
conn.execute("CREATE INDEX q_state ON q (state, id)")
conn.execute("BEGIN")
conn.executemany("INSERT INTO q (state) VALUES (0)", [()] * jobs)
conn.execute("COMMIT")
running = [subprocess.Popen([sys.executable, "-c", loop, path]) for _ in range(loops)]
codes = [proc.wait() for proc in running]
done = conn.execute("SELECT count(*) FROM q WHERE state = 2").fetchone()[0]
sys.exit(max(codes) or (0 if done == jobs else 3))
"""

# The floor with queuectl's store in it: the same K loops, but each job's transaction is
# queuectl's own (lifecycle.finish_and_claim on a SqliteStore: the outcome, its attempt row and
# events, counters, settling, the next claim), then the same posix_spawn and wait. What a drain
# costs above it is the worker's (its selector loop, pipes, output, heartbeats, logs); what this
# costs above the bare floor is the store's per-job SQL (and ~0.15 s of importing queuectl's
# store in each loop, as a worker's start-up counts in a drain).
_DRAIN_STORE_LOOP = r"""
import os, sys, time
from queuectl.core import lifecycle
from queuectl.core.models import COMPLETED, Lease, Outcome
from queuectl.store.sql.sqlite import SqliteStore
store, me, env = SqliteStore(sys.argv[1]), f"loop-{os.getpid()}", dict(os.environ)
held = lifecycle.claim(store, me, None, time.time(), 60.0, 1)
while held:
    job = held[0]
    os.waitpid(os.posix_spawn("/bin/sh", ["sh", "-c", job.command], env), 0)
    outcome = Outcome(COMPLETED, time.time(), exit_code=0, output="")
    _, held = lifecycle.finish_and_claim(
        store, [(Lease(job.id, me, job.attempts), outcome)], me, None, time.time(), 60.0, 1
    )
"""
_DRAIN_STORE = r"""
import subprocess, sys
from queuectl.store.sql.sqlite import SqliteStore
path, jobs, loops, loop, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
store = SqliteStore(path)
if step == "fill":  # not timed, as a drain's enqueue --file is not
    from queuectl.service.jobs import enqueue
    sys.exit(0 if len(enqueue(store, [{"command": "true"}] * jobs)) == jobs else 3)
running = [subprocess.Popen([sys.executable, "-c", loop, path]) for _ in range(loops)]
codes = [proc.wait() for proc in running]
done = store.counts().get("default", {}).get("completed", 0)
sys.exit(max(codes) or (0 if done == jobs else 3))
"""


def scenario_drain(bench: Bench, backend: str, run: int) -> None:
    n = bench.sizes.drain_jobs
    res = bench.results
    lines = write_lines(os.path.join(bench.root, f"drain-{n}.txt"), n, lambda _: "true")
    for count, concurrency in DRAIN_SHAPES:
        slots = count * concurrency
        shape = f"{count}x{concurrency}"
        raw_s = res.define(f"raw.xargs{slots}.s", f"xargs -P{slots} sh -c true, {n} jobs", "s")
        raw_rate = res.define(f"raw.xargs{slots}.jobs_per_s", f"xargs -P{slots} jobs/s", "jobs/s")
        raw_cpu = res.define(f"raw.xargs{slots}.cpu_s", f"xargs -P{slots} CPU (all processes)", "s")
        key = f"{backend}.drain.{shape}"
        drain_s = res.define(f"{key}.s", f"{prefix(backend)}drain {shape} (K={slots}), {n} jobs", "s", baseline=raw_s)
        one_slot_each = concurrency == 1 and backend == "sqlite"  # issue 18's target: one slot per worker
        rate = res.define(
            f"{key}.jobs_per_s",
            f"{prefix(backend)}drain {shape} jobs/s",
            "jobs/s",
            baseline=raw_rate,
            target=AtLeast("ratio", 0.80, f">= 0.80 x xargs -P{slots}") if one_slot_each else None,
        )
        cpu = res.define(f"{key}.cpu_s", f"{prefix(backend)}drain {shape} CPU (all processes)", "s", baseline=raw_cpu)
        floor_rate = res.define(
            f"raw.floor{slots}.jobs_per_s", f"python + SQLite floor, {slots} one-slot loops, jobs/s", "jobs/s"
        )
        floor_cpu = res.define(f"raw.floor{slots}.cpu_s", f"python + SQLite floor, {slots} one-slot loops, CPU", "s")
        vs_floor = res.define(
            f"{key}.vs_floor", f"{prefix(backend)}drain {shape} jobs/s, against the floor", "jobs/s", floor_rate
        )
        cpu_vs_floor = res.define(
            f"{key}.cpu_vs_floor", f"{prefix(backend)}drain {shape} CPU, against the floor", "s", floor_cpu
        )
        store_rate = store_cpu = vs_store = None
        if one_slot_each:  # the 2 x 1 miss, split in two: the store's SQL, and the worker around it
            store_rate = res.define(
                f"raw.store_loops{slots}.jobs_per_s",
                f"floor + queuectl's store, {slots} one-slot loops, jobs/s",
                "jobs/s",
                baseline=raw_rate,
            )
            store_cpu = res.define(
                f"raw.store_loops{slots}.cpu_s",
                f"floor + queuectl's store, {slots} one-slot loops, CPU",
                "s",
                baseline=floor_cpu,
            )
            vs_store = res.define(
                f"{key}.vs_store_loops",
                f"{prefix(backend)}drain {shape} jobs/s, against the store loops",
                "jobs/s",
                store_rate,
            )
        with bench.queue(backend, f"drain-{shape}") as queue:
            raw = run_cmd(
                ["xargs", "-P", str(slots), "-I{}", "sh", "-c", "true"], queue.env, queue.dir, stdin_path=lines
            ).check("xargs")
            res.add(raw_s, run, raw.wall)
            res.add(raw_rate, run, n / raw.wall)
            res.add(raw_cpu, run, raw.cpu)
            floor_db = os.path.join(queue.dir, "floor.db")
            floor = run_cmd(
                [bench.python, "-c", _DRAIN_FLOOR, floor_db, str(n), str(slots), _DRAIN_FLOOR_LOOP],
                queue.env,
                queue.dir,
            ).check("the drain floor")
            res.add(floor_rate, run, n / floor.wall)
            res.add(floor_cpu, run, floor.cpu)
            if store_rate is not None and store_cpu is not None:
                store_db = os.path.join(queue.dir, "store-loops.db")
                store_args = [bench.python, "-c", _DRAIN_STORE, store_db, str(n), str(slots), _DRAIN_STORE_LOOP]
                run_cmd([*store_args, "fill"], queue.env, queue.dir).check("filling the store loops' queue")
                looped = run_cmd([*store_args, "run"], queue.env, queue.dir).check("the store loops")
                res.add(store_rate, run, n / looped.wall)
                res.add(store_cpu, run, looped.cpu)
            enqueue_file(bench, queue, lines, n)
            ran = run_cmd(
                bench.q("worker", "start", "--count", str(count), "--concurrency", str(concurrency), "--burst"),
                queue.env,
                queue.dir,
            )
            ran.check(f"worker start --burst {shape}")
            queue.expect_all("completed", n, f"drain {shape} on {backend}")
            res.add(drain_s, run, ran.wall)
            res.add(rate, run, n / ran.wall)
            res.add(vs_floor, run, n / ran.wall)
            if vs_store is not None:
                res.add(vs_store, run, n / ran.wall)
            res.add(cpu, run, ran.cpu)
            res.add(cpu_vs_floor, run, ran.cpu)


# --- 2. pickup latency --------------------------------------------------------------------------


def scenario_pickup(bench: Bench, backend: str, run: int) -> None:
    res = bench.results
    base50 = res.define("raw.spawn.p50", "spawn sh -c 'date > f', p50", "ms")
    base95 = res.define("raw.spawn.p95", "spawn sh -c 'date > f', p95", "ms")
    key = f"{backend}.pickup"
    p50 = res.define(f"{key}.p50", f"{prefix(backend)}pickup after enqueue returned, p50", "ms", baseline=base50)
    p95 = res.define(f"{key}.p95", f"{prefix(backend)}pickup after enqueue returned, p95", "ms", baseline=base95)
    e2e = res.define(f"{key}.e2e_p50", f"{prefix(backend)}enqueue start to job ran, p50", "ms", baseline=base50)
    api50 = res.define(f"{key}.api_p50", f"{prefix(backend)}pickup after API enqueue, p50", "ms", baseline=base50)
    api95 = res.define(f"{key}.api_p95", f"{prefix(backend)}pickup after API enqueue, p95", "ms", baseline=base95)
    samples = bench.sizes.pickup_samples
    cli, end_to_end, api, spawned = [], [], [], []
    with bench.queue(backend, "pickup") as queue:
        supervisor, _ = start_workers(bench, queue, 2)
        try:
            time.sleep(0.3)  # let both workers finish their first claim and go idle
            for i in range(samples):
                stamp = os.path.join(queue.dir, f"cli-{i}.ts")
                started = time.time()
                ran = run_cmd(bench.q("enqueue", f"date +%s.%N > {stamp}"), queue.env, queue.dir).check("enqueue")
                ran_at = wait_for_stamp(stamp)
                cli.append((ran_at - ran.returned_at) * 1000)
                end_to_end.append((ran_at - started) * 1000)
                settle()
                api.append(api_pickup_ms(queue, os.path.join(queue.dir, f"api-{i}.ts")))
                settle()
                spawned.append(spawn_latency_ms(queue, os.path.join(queue.dir, f"raw-{i}.ts")))
            time.sleep(0.3)
            queue.expect_all("completed", 2 * samples, f"pickup on {backend}")
        finally:
            stop_workers(supervisor, queue)
    for figure, values, pct in (
        (p50, cli, 50),
        (p95, cli, 95),
        (e2e, end_to_end, 50),
        (api50, api, 50),
        (api95, api, 95),
        (base50, spawned, 50),
        (base95, spawned, 95),
    ):
        res.add(figure, run, percentile(values, pct))


FOLLOW_LINES = 15  # lines one followed job writes, one every FOLLOW_GAP_S
FOLLOW_GAP_S = 0.2
FOLLOW_ATTACH_S = 2.0


def _line_delays_ms(stream: Any) -> list[float]:
    """For each ``date +%s.%N`` line read from ``stream``: how long after it was written it arrived."""
    delays = []
    for raw in stream:
        arrived = time.time()
        with contextlib.suppress(ValueError):
            delays.append((arrived - float(raw.strip())) * 1000)
    return delays


def scenario_follow(bench: Bench, backend: str, run: int) -> None:
    """``logs --follow`` of a running job on the worker's host: each line's delay from the moment
    the job wrote it (``date +%s.%N``) to the moment it came out of the follow; heartbeat at its
    default 5 s, so nothing comes through the database. Baseline: the same script's lines read
    straight from its pipe."""
    res = bench.results
    base50 = res.define("raw.pipe.p50", "line through a pipe, p50", "ms")
    base95 = res.define("raw.pipe.p95", "line through a pipe, p95", "ms")
    p50 = res.define("sqlite.follow.p50", "logs --follow, line written to printed, p50", "ms", baseline=base50)
    p95 = res.define(
        "sqlite.follow.p95",
        "logs --follow, line written to printed, p95",
        "ms",
        baseline=base95,
        target=Target("value", 500.0, "<= 500 ms"),
    )
    # the first line waits until the follow has started (a Python start-up is not what we measure)
    script = f"sleep {FOLLOW_ATTACH_S}; for i in $(seq 1 {FOLLOW_LINES}); do date +%s.%N; sleep {FOLLOW_GAP_S}; done"
    with bench.queue(backend, "follow") as queue:
        supervisor, _ = start_workers(bench, queue, 1)
        try:
            job_id = run_cmd(bench.q("enqueue", script), queue.env, queue.dir).check("enqueue").out.strip()
            follower = PROCS.spawn(
                bench.q("logs", job_id, "--follow"), env=queue.env, cwd=queue.dir, stdout=subprocess.PIPE
            )
            assert follower.stdout is not None
            followed = _line_delays_ms(io.TextIOWrapper(follower.stdout))
            if follower.wait(timeout=60) != 0 or len(followed) != FOLLOW_LINES:
                raise BenchFailure(f"logs --follow: exit {follower.returncode}, {len(followed)} lines")
            PROCS.forget(follower)
        finally:
            stop_workers(supervisor, queue)
        raw = PROCS.spawn(["sh", "-c", script], env=queue.env, cwd=queue.dir, stdout=subprocess.PIPE)
        assert raw.stdout is not None
        piped = _line_delays_ms(io.TextIOWrapper(raw.stdout))
        raw.wait(timeout=60)
        PROCS.forget(raw)
    for figure, values, pct in ((p50, followed, 50), (p95, followed, 95), (base50, piped, 50), (base95, piped, 95)):
        res.add(figure, run, percentile(values, pct))


def settle() -> None:
    """Give the worker time to record the job and go idle again, with jitter."""
    time.sleep(0.05 + random.random() * 0.05)


def api_pickup_ms(queue: Queue, stamp: str) -> float:
    """Enqueue in this process (queuectl.service.jobs.enqueue): pickup without any CLI start-up or exit."""
    from queuectl.service import jobs as service
    from queuectl.store import open_store

    store = open_store(queue.url)
    try:
        service.enqueue(store, [{"command": f"date +%s.%N > {stamp}"}])
        returned = time.time()
    finally:
        store.close()
    return (wait_for_stamp(stamp) - returned) * 1000


def spawn_latency_ms(queue: Queue, stamp: str) -> float:
    started = time.time()
    run_cmd(["sh", "-c", f"date +%s.%N > {stamp}"], queue.env, queue.dir).check("sh -c date")
    return (wait_for_stamp(stamp) - started) * 1000


# --- 3. command line start-up -------------------------------------------------------------------


def scenario_cli(bench: Bench, backend: str, run: int) -> None:
    res = bench.results
    typer_ms = f"{backend}.cli.import_typer"
    commands: dict[str, tuple[str, list[str], Optional[str], Optional[Target]]] = {
        f"{backend}.cli.python_pass": (f"{prefix(backend)}python -c pass", [bench.python, "-c", "pass"], None, None),
        typer_ms: (
            f"{prefix(backend)}python -c 'import typer'",
            [bench.python, "-c", "import typer"],
            f"{backend}.cli.python_pass",
            None,
        ),
        f"{backend}.cli.enqueue": (
            f"{prefix(backend)}queuectl enqueue true",
            bench.q("enqueue", "true"),
            typer_ms,
            Target("delta", 25, "<= import typer + 25 ms"),
        ),
    }
    if backend == "sqlite":  # --help never opens the database
        commands[f"{backend}.cli.help"] = (
            "queuectl --help",
            bench.q("--help"),
            typer_ms,
            Target("delta", 25, "<= import typer + 25 ms"),
        )
    for key, (label, _, baseline, target) in commands.items():
        res.define(key, label, "ms", baseline=baseline, target=target)
    with bench.queue(backend, "cli") as queue:
        for _, cmd, _, _ in commands.values():  # warm the page cache and create the database
            run_cmd(cmd, queue.env, queue.dir).check(" ".join(cmd[-2:]))
        enqueued = 1
        for _ in range(bench.sizes.cli_reps):
            order = list(commands.items())
            random.shuffle(order)
            for key, (_, cmd, _, _) in order:
                ran = run_cmd(cmd, queue.env, queue.dir).check(" ".join(cmd[-2:]))
                res.add(key, run, ran.wall * 1000)
                enqueued += key.endswith(".enqueue")
        queue.expect_all("pending", enqueued, f"cli enqueue on {backend}")


# --- 4. idle cost -------------------------------------------------------------------------------


# The floor under an idle worker's RSS: a python that imports only the standard library a SQLite
# worker cannot do without (the driver, a selector, the wake-up socket, json, ctypes for the
# subreaper and the heap trim), opens the queue's database, reads as a claim and a heartbeat do,
# trims its heap and sleeps. What queuectl's own code (and dataclasses, typing) adds is above it.
_IDLE_FLOOR = r"""
import ctypes, json, selectors, socket, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
for _ in range(3):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("SELECT * FROM jobs WHERE state = 'pending' LIMIT 1").fetchall()
    conn.execute("SELECT * FROM workers").fetchall()
    conn.execute("COMMIT")
ctypes.CDLL(None).malloc_trim(0)
time.sleep(3600)
"""


def scenario_idle(bench: Bench, backend: str, run: int) -> None:
    res = bench.results
    seconds = bench.sizes.idle_seconds
    base_rss = res.define("raw.idle_python.rss", "idle python (time.sleep) RSS", "MB")
    base_cpu = res.define("raw.idle_python.cpu", "idle python (time.sleep) CPU", "% core")
    rss = res.define(
        "sqlite.idle.worker_rss",
        "idle worker RSS (each of 2)",
        "MB",
        baseline=base_rss,
        target=Target("value", 15, "<= 15 MB"),  # issue 18
    )
    floor_rss = res.define("raw.idle_floor.rss", "stdlib floor: sqlite3 + selectors + socket + json + ctypes", "MB")
    over_floor = res.define("sqlite.idle.worker_vs_floor", "idle worker RSS, against the floor", "MB", floor_rss)
    sup_rss = res.define("sqlite.idle.supervisor_rss", "idle supervisor RSS", "MB", baseline=base_rss)
    base_set = res.define("raw.idle_python.rss_x3", "3 idle pythons (time.sleep) RSS", "MB")
    set_rss = res.define("sqlite.idle.set_rss", "idle supervisor + 2 workers RSS, total", "MB", baseline=base_set)
    cpu = res.define(
        "sqlite.idle.cpu",
        f"idle supervisor + 2 workers CPU over {seconds:g}s",
        "% core",
        baseline=base_cpu,
        target=Target("value", 0.5, "<= 0.5 % of a core"),
    )
    with bench.queue(backend, "idle") as queue:
        sleeper = PROCS.spawn([bench.python, "-c", "import time; time.sleep(3600)"], env=queue.env, cwd=queue.dir)
        floor = None
        try:
            supervisor, worker_pids = start_workers(bench, queue, 2)  # creates the database first
        except BaseException:
            PROCS.stop(sleeper, grace=0)
            raise
        try:
            database = queue.url.removeprefix("sqlite:///")
            floor = PROCS.spawn([bench.python, "-c", _IDLE_FLOOR, database], env=queue.env, cwd=queue.dir)
            time.sleep(1.0)  # start-up work done; from here on they are idle
            pids = [supervisor.pid, *worker_pids]
            before = [proc_cpu_seconds(pid) for pid in pids]
            base_before = proc_cpu_seconds(sleeper.pid)
            start = time.monotonic()
            time.sleep(seconds)
            window = time.monotonic() - start
            used = sum(proc_cpu_seconds(pid) for pid in pids) - sum(before)
            res.add(cpu, run, used / window * 100)
            res.add(base_cpu, run, (proc_cpu_seconds(sleeper.pid) - base_before) / window * 100)
            for pid in worker_pids:
                res.add(rss, run, proc_rss_mb(pid))
                res.add(over_floor, run, proc_rss_mb(pid))
            res.add(floor_rss, run, proc_rss_mb(floor.pid))
            res.add(sup_rss, run, proc_rss_mb(supervisor.pid))
            res.add(set_rss, run, sum(proc_rss_mb(pid) for pid in pids))
            res.add(base_rss, run, proc_rss_mb(sleeper.pid))
            res.add(base_set, run, 3 * proc_rss_mb(sleeper.pid))
        finally:
            PROCS.stop(sleeper, grace=0)
            if floor is not None:
                PROCS.stop(floor, grace=0)
            stop_workers(supervisor, queue)


# --- 5. bulk enqueue ----------------------------------------------------------------------------

_RAW_INSERT = r"""
import os, sqlite3, sys, time
path, lines = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
now = time.time()
def rows():
    with open(lines, encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if line.strip():
                t = now + i * 1e-6
                yield (os.urandom(8).hex(), line.rstrip("\n"), "pending", "default", 0, 0, 3, t, t, t)
conn.execute("BEGIN IMMEDIATE")
count = conn.executemany(
    "INSERT INTO jobs (id, command, state, queue, priority, attempts, max_retries, run_at, created_at,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows()).rowcount
conn.execute("COMMIT")
print(count)
"""


def scenario_bulk(bench: Bench, backend: str, run: int) -> None:
    res = bench.results
    n = bench.sizes.bulk_lines
    if backend == "postgres":  # beside SQLite's figure of the same run
        lines = os.path.join(bench.root, f"bulk-{n}.txt")
        if not os.path.exists(lines):
            write_lines(lines, n, lambda i: f"echo {i}")
        sqlite_rate = res.define("sqlite.bulk.jobs_per_s", f"enqueue --file, {n} lines", "jobs/s")
        pg_rate = res.define("postgres.bulk.jobs_per_s", f"postgres enqueue --file, {n} lines", "jobs/s", sqlite_rate)
        with bench.queue(backend, "bulk") as queue:
            ran = run_isolated(bench.python, bench.q("enqueue", "--file", lines), queue.env, queue.dir)
            ran.check("enqueue --file")
            queue.expect_all("pending", n, "bulk enqueue on postgres")
            res.add(pg_rate, run, n / ran.wall)
        return
    floor = res.define("raw.rusage_floor", "peak RSS floor of the measuring wrapper (true)", "MB")
    with bench.queue(backend, "bulk-floor") as queue:
        res.add(floor, run, run_isolated(bench.python, ["true"], queue.env, queue.dir).maxrss_kb / 1024)
    for size, key in ((n, "bulk"), (bench.sizes.bulk_big_lines, "bulk_big")):
        bulk_sqlite(bench, run, size, key)


def bulk_sqlite(bench: Bench, run: int, n: int, key: str) -> None:
    """``enqueue --file`` of ``n`` lines against a raw executemany of the same rows into the same
    (empty) schema, run back to back: jobs per second of wall time, and per CPU second (on a
    loaded machine the CPU figure is the steadier one), and peak RSS."""
    from queuectl.store.sql.sqlite import SqliteStore

    res = bench.results
    raw_rate = res.define(f"raw.{key}.jobs_per_s", f"sqlite3 executemany, same schema, {n} rows", "jobs/s")
    raw_cpu = res.define(f"raw.{key}.jobs_per_cpu_s", f"sqlite3 executemany, {n} rows, per CPU second", "jobs/s")
    raw_rss = res.define(f"raw.{key}.rss", f"sqlite3 executemany {n} rows peak RSS", "MB")
    rate = res.define(
        f"sqlite.{key}.jobs_per_s",
        f"enqueue --file, {n} lines",
        "jobs/s",
        baseline=raw_rate,
        # issue 18, for the 1,000,000-line file: within 2 x of raw (and the absolute figure below)
        target=AtLeast("ratio", 0.5, ">= 0.5 x raw (within 2 x)") if key == "bulk_big" else None,
    )
    absolute = None  # issue 18's other target, for the big file: the same samples, judged as they are
    if key == "bulk_big":
        target = AtLeast("value", 100_000, ">= 100,000 jobs/s")
        absolute = res.define(f"sqlite.{key}.jobs_per_s_absolute", f"enqueue --file, {n} lines", "jobs/s", None, target)
    cpu = res.define(
        f"sqlite.{key}.jobs_per_cpu_s", f"enqueue --file, {n} lines, per CPU second", "jobs/s", baseline=raw_cpu
    )
    rss = res.define(f"sqlite.{key}.rss", f"enqueue --file {n} lines peak RSS", "MB", baseline=raw_rss)
    lines = os.path.join(bench.root, f"bulk-{n}.txt")
    if not os.path.exists(lines):
        write_lines(lines, n, lambda i: f"echo {i}")
    with bench.queue("sqlite", f"{key}-raw") as queue:
        db = queue.url[len("sqlite:///") :]
        SqliteStore(db).close()  # the real schema and indexes, empty
        ran = run_isolated(bench.python, [bench.python, "-c", _RAW_INSERT, db, lines], queue.env, queue.dir)
        ran.check("raw insert")
        res.add(raw_rate, run, n / ran.wall)
        res.add(raw_cpu, run, n / ran.cpu)
        res.add(raw_rss, run, ran.maxrss_kb / 1024)
    with bench.queue("sqlite", key) as queue:
        ran = run_isolated(bench.python, bench.q("enqueue", "--file", lines), queue.env, queue.dir)
        ran.check("enqueue --file")
        if f"enqueued {n} job" not in ran.err:
            raise BenchFailure(f"enqueue --file: expected 'enqueued {n} job(s)', got {ran.err.strip()!r}")
        if ran.out.count("\n") != n:
            raise BenchFailure(f"enqueue --file: expected {n} ids on stdout, got {ran.out.count(chr(10))}")
        queue.expect_all("pending", n, "bulk enqueue")
        res.add(rate, run, n / ran.wall)
        if absolute is not None:
            res.add(absolute, run, n / ran.wall)
        res.add(cpu, run, n / ran.cpu)
        res.add(rss, run, ran.maxrss_kb / 1024)
    if run == 1 and key == "bulk_big":  # all or nothing at this size too: a bad last line leaves nothing
        bad = os.path.join(bench.root, f"bulk-{n}-bad.txt")
        if not os.path.exists(bad):
            shutil.copyfile(lines, bad)
            with open(bad, "a", encoding="utf-8") as handle:
                handle.write('{"command": "echo", "priority": "high"}\n')
        with bench.queue("sqlite", f"{key}-bad") as queue:
            ran = run_cmd(bench.q("enqueue", "--file", bad), queue.env, queue.dir)
            if ran.code == 0 or f"line {n + 1}:" not in ran.err or "nothing was enqueued" not in ran.err:
                raise BenchFailure(f"enqueue --file with a bad last line: exit {ran.code}, {ran.err.strip()[-200:]!r}")
            queue.expect_all("pending", 0, "a refused bulk enqueue")


# --- 6. scale -----------------------------------------------------------------------------------


def fill_store(path: str, completed: int, pending: int) -> None:
    """Insert jobs straight through the store's bulk insert: fast, and the real schema.

    ``path``: a SQLite file, or a store URL."""
    from queuectl.core.models import COMPLETED, Job
    from queuectl.store import open_store

    rng = random.Random(42)
    store = open_store(path if "://" in path else f"sqlite:///{path}")
    start = time.time() - 30 * 86400
    try:

        def done(first: int, last: int) -> Iterator[Job]:
            for i in range(first, last):
                t = start + i * 0.01
                yield Job(
                    id=f"{rng.getrandbits(50):013x}",
                    command=f"echo {i}",
                    state=COMPLETED,
                    attempts=1,
                    run_at=t,
                    created_at=t,
                    updated_at=t + 1,
                    started_at=t + 0.5,
                    finished_at=t + 1,
                    duration=0.5,
                    exit_code=0,
                    output=f"{i}\n",
                )

        for first in range(0, completed, 50_000):
            lifecycle.enqueue(store, done(first, min(completed, first + 50_000)))
        now = time.time()
        lifecycle.enqueue(
            store,
            (
                Job(id=f"p{i:07d}", command="true", run_at=now, created_at=now + i * 1e-6, updated_at=now)
                for i in range(pending)
            ),
        )
    finally:
        store.close()


def scale_pending(bench: Bench) -> int:
    return bench.sizes.scale_pending + bench.sizes.scale_claims * int(bench.args.runs)


def big_store(bench: Bench) -> str:
    if bench.scale_store is None:
        path = os.path.join(bench.root, "scale", "q.db")
        os.makedirs(os.path.dirname(path))
        n = bench.sizes.scale_jobs
        print(
            f"building the scale store: {n} completed + {scale_pending(bench)} pending jobs ...",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()
        fill_store(path, n, scale_pending(bench))
        bench.scale_build_seconds = time.perf_counter() - start
        print(
            f"  built in {bench.scale_build_seconds:.1f}s ({os.path.getsize(path) / 2**20:.0f} MB)",
            file=sys.stderr,
            flush=True,
        )
        bench.scale_store = path
    return bench.scale_store


def claim_finish_ms(path: str, claims: int) -> float:
    """Mean ms of one claim + finish, as a worker does them, in this process (a file or a URL)."""
    from queuectl.core.models import COMPLETED, Lease, Outcome
    from queuectl.store import open_store

    store = open_store(path if "://" in path else f"sqlite:///{path}")
    try:
        start = time.perf_counter()
        for _ in range(claims):
            jobs = store.claim("bench", None, time.time(), 30.0, 1)
            if not jobs:
                raise BenchFailure(f"claim found no pending job in {path}")
            job = jobs[0]
            outcome = Outcome(COMPLETED, time.time(), exit_code=0, output="", duration=0.0)
            if not lifecycle.finish(store, Lease(job.id, "bench", job.attempts), outcome):
                raise BenchFailure(f"finish of job {job.id} was refused (lease lost?)")
        return (time.perf_counter() - start) / claims * 1000
    finally:
        store.close()


def scenario_scale_postgres(bench: Bench, run: int) -> None:
    """claim+finish on PostgreSQL: a schema with --scale-jobs completed jobs against an empty one."""
    res = bench.results
    n = bench.sizes.scale_jobs
    small_claim = res.define("postgres.scale.empty.claim", "postgres claim+finish, pending jobs only", "ms")
    claim = res.define(
        "postgres.scale.claim",
        f"postgres claim+finish, {n} jobs in store",
        "ms",
        baseline=small_claim,
        target=Target("ratio", 1.5, "<= 1.5 x empty store"),
    )
    if bench.pg_scale_url is None:
        assert bench.pg_url is not None
        bench.pg_scale_url = pg_schema_url(bench.pg_url, f"qbench_{os.getpid()}_scale")
        print(f"building the postgres scale store: {n} completed jobs ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        fill_store(bench.pg_scale_url, n, scale_pending(bench))
        analyze_pg(bench.pg_scale_url)
        print(f"  built in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    with bench.queue("postgres", "scale-small") as small_queue:
        fill_store(small_queue.url, 0, scale_pending(bench))
        analyze_pg(small_queue.url)
        chunk = max(1, bench.sizes.scale_claims // 4)
        for _ in range(bench.sizes.scale_claims // chunk):  # alternate, so noise hits both alike
            res.add(small_claim, run, claim_finish_ms(small_queue.url, chunk))
            res.add(claim, run, claim_finish_ms(bench.pg_scale_url, chunk))


def scenario_scale(bench: Bench, backend: str, run: int) -> None:
    if backend == "postgres":
        scenario_scale_postgres(bench, run)
        return
    res = bench.results
    n = bench.sizes.scale_jobs
    big = big_store(bench)
    small_claim = res.define("sqlite.scale.empty.claim", "claim+finish, store with pending jobs only", "ms")
    small_status = res.define("sqlite.scale.empty.status", "queuectl status, pending jobs only", "ms")
    small_list = res.define("sqlite.scale.empty.list", "queuectl list --limit 50, pending jobs only", "ms")
    claim = res.define(
        "sqlite.scale.claim",
        f"claim+finish, {n} jobs in store",
        "ms",
        baseline=small_claim,
        target=Target("ratio", 1.5, "<= 1.5 x empty store"),
    )
    status = res.define(
        "sqlite.scale.status",
        f"queuectl status, {n} jobs",
        "ms",
        baseline=small_status,
        target=Target("value", 300, "<= 300 ms"),
    )
    listing = res.define(
        "sqlite.scale.list",
        f"queuectl list --limit 50, {n} jobs",
        "ms",
        baseline=small_list,
        target=Target("value", 100, "<= 100 ms"),
    )
    with bench.queue(backend, "scale-small") as small_queue:
        small = small_queue.url[len("sqlite:///") :]
        fill_store(small, 0, scale_pending(bench))
        big_queue = Queue(
            backend, f"sqlite:///{big}", small_queue.dir, {**small_queue.env, "QUEUECTL_DB": f"sqlite:///{big}"}
        )
        chunk = max(1, bench.sizes.scale_claims // 4)
        for _ in range(bench.sizes.scale_claims // chunk):  # alternate, so noise hits both alike
            res.add(small_claim, run, claim_finish_ms(small, chunk))
            res.add(claim, run, claim_finish_ms(big, chunk))
        for queue in (small_queue, big_queue):  # warm the page cache
            run_cmd(bench.q("status"), queue.env, queue.dir).check("status")
        for _ in range(bench.sizes.scale_reps):
            for queue, status_key, list_key in ((small_queue, small_status, small_list), (big_queue, status, listing)):
                ran = run_cmd(bench.q("status"), queue.env, queue.dir).check("status")
                res.add(status_key, run, ran.wall * 1000)
                ran = run_cmd(bench.q("list", "--limit", "50"), queue.env, queue.dir).check("list")
                res.add(list_key, run, ran.wall * 1000)


# --- 7. the HTTP API (scripts/bench_http.py) ---------------------------------------------------


def scenario_http(bench: Bench, backend: str, run: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_http

    at_least = lambda limit, text: AtLeast("value", limit, text)  # noqa: E731
    bench_http.scenario(bench, backend, run, Target, at_least, BenchFailure, big_store)


def scenario_reads(bench: Bench, backend: str, run: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_reads

    bench_reads.scenario(bench, backend, run, Target)


# --- the table and the JSON ---------------------------------------------------------------------


def fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def print_table(bench: Bench) -> dict[str, dict[str, Any]]:
    rows = {key: bench.results.summary(fig) for key, fig in bench.results.figures.items()}
    header = ("figure", "unit", "median", "min .. max", "baseline", "ratio", "delta", "target", "")
    lines = [header]
    for row in rows.values():
        base = rows.get(row["baseline"]) if row["baseline"] else None
        lines.append(
            (
                row["label"],
                row["unit"],
                fmt(row["median"]),
                f"{fmt(row['min'])} .. {fmt(row['max'])}",
                fmt(base["median"]) if base else "",
                f"x{row['ratio']:.2f}" if row["ratio"] is not None else "",
                f"{row['delta']:+.1f}" if row["delta"] is not None and row["unit"] != "jobs/s" else "",
                row["target"] or "",
                row["status"] or "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}
    for number, line in enumerate(lines):
        print(
            "  ".join(
                cell.rjust(w) if i in right else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            print("  ".join("-" * w for w in widths).rstrip())
    return rows


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=10).stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "queuectl"))}
    return {}


def write_json(bench: Bench, rows: dict[str, dict[str, Any]], path: str, seconds: float) -> None:
    data = {
        "meta": {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(seconds, 1),
            **git_state(),
            "queuectl": bench.queuectl,
            "python": bench.python,
            "cpus": os.cpu_count(),
            "quick": bench.args.quick,
            "runs": bench.args.runs,
            "sizes": bench.sizes.__dict__,
            "scale_build_seconds": bench.scale_build_seconds,
            "mongodb": bool(bench.mongo_url),
            "bytecode": "compiled once into a private PYTHONPYCACHEPREFIX",
        },
        "figures": rows,
        "failures": bench.results.failures,
        "notes": bench.results.notes,
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


# --- main ---------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Bench, str, int], None]] = {
    "drain": scenario_drain,
    "pickup": scenario_pickup,
    "follow": scenario_follow,
    "cli": scenario_cli,
    "idle": scenario_idle,
    "bulk": scenario_bulk,
    "scale": scenario_scale,
    "http": lambda bench, backend, run: scenario_http(bench, backend, run),
    "reads": lambda bench, backend, run: scenario_reads(bench, backend, run),
}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 run: a smoke test")
    parser.add_argument("--runs", type=int, default=None, help="runs of every scenario (default 3; quick: 1)")
    parser.add_argument("--json", default="bench-results.json", metavar="PATH", help="where to write results")
    parser.add_argument("--only", default="", metavar="NAME[,NAME]", help=f"scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--scale-jobs", type=int, default=None, metavar="N", help="jobs in the scale store")
    parser.add_argument("--reads-jobs", type=int, default=None, metavar="N", help="jobs in the reads store (1M)")
    parser.add_argument(
        "--mongodb-url",
        default=None,
        metavar="URL",
        help="also run drain, pickup, cli on MongoDB (or set QUEUECTL_BENCH_MONGODB_URL)",
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="a PostgreSQL URL: also run drain, pickup, bulk, scale there (or set QUEUECTL_BENCH_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.scenarios = [name for name in SCENARIOS if name in chosen]
    return args


def plan(bench: Bench) -> list[tuple[str, str]]:
    tasks = [(name, "sqlite") for name in bench.args.scenarios]
    if bench.mongo_url:
        tasks += [(name, "mongodb") for name in bench.args.scenarios if name in MONGO_SCENARIOS]
    if bench.pg_url:
        tasks += [(name, "postgres") for name in bench.args.scenarios if name in POSTGRES_SCENARIOS]
    return tasks


def run_all(bench: Bench) -> None:
    tasks = plan(bench)
    for run in range(bench.args.runs):
        shift = run % len(tasks)
        for name, backend in tasks[shift:] + tasks[:shift]:
            print(f"run {run + 1}/{bench.args.runs}: {name} ({backend})", file=sys.stderr, flush=True)
            try:
                RUNNERS[name](bench, backend, run)
            except BenchFailure as exc:
                message = f"run {run + 1}, {name} on {backend}: {exc}"
                bench.results.failures.append(message)
                print(f"CORRECTNESS FAILURE: {message}", file=sys.stderr, flush=True)


def on_sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_sigterm)
    bench = Bench(args)
    started = time.perf_counter()
    code = 0
    try:
        if bench.mongo_url:
            try:
                check_mongo(bench.mongo_url)
            except Exception as exc:  # pymongo's errors: the URL was given, so this is fatal
                print(f"bench: cannot reach MongoDB at {redact(bench.mongo_url)}: {str(exc)[:300]}", file=sys.stderr)
                return 2
        else:
            bench.results.notes.append("MongoDB: skipped (give --mongodb-url URL or set QUEUECTL_BENCH_MONGODB_URL)")
        sizes = bench.sizes
        print(
            f"queuectl: {' '.join(bench.queuectl)}; python: {bench.python}; runs: {args.runs}; "
            f"drain {sizes.drain_jobs}, bulk {sizes.bulk_lines}, scale {sizes.scale_jobs} jobs",
            file=sys.stderr,
            flush=True,
        )
        try:
            warm_up(bench)
        except BenchFailure as exc:
            bench.results.failures.append(f"warm-up: {exc}")
        else:
            run_all(bench)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process started", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        PROCS.stop_all()
        if bench.pg_scale_url:
            drop_pg_schema(bench.pg_scale_url)
        shutil.rmtree(bench.root, ignore_errors=True)
    print()
    rows = print_table(bench)
    for note in bench.results.notes:
        print(note)
    if bench.results.failures:
        print(f"\nCORRECTNESS FAILURES ({len(bench.results.failures)}):")
        for failure in bench.results.failures:
            print(f"  {failure}")
        code = code or 1
    write_json(bench, rows, args.json, time.perf_counter() - started)
    print(f"\nresults: {args.json} ({time.perf_counter() - started:.0f}s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
