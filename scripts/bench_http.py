"""The HTTP figures of ``scripts/bench.py`` (scenario ``http``): ``queuectl serve`` as a real
process, driven over keep-alive connections from this process.

Each figure has a trivial endpoint of the same stack, measured in the same run, as its baseline:
``GET /healthz`` (no token, no database) with the same number of clients. The ratio says what
the token check, the validation and the database cost on top of uvicorn and Starlette.

  POST /api/jobs      8 clients, one job per request: requests/s, p50 and p99 latency
  POST /api/jobs:batch  NDJSON batches of ``batch_jobs``: jobs/s (baseline: healthz requests/s)
  GET /api/jobs?state=completed&limit=50  on the scale store (1M jobs; quick: 20k): latency
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

CLIENTS = 8


@dataclass(frozen=True)
class HttpSizes:
    posts: int  # single submissions per run, over all clients
    batch_jobs: int  # jobs per batch request
    batches: int  # per run
    list_reps: int  # list requests per run


FULL = HttpSizes(posts=4000, batch_jobs=10_000, batches=3, list_reps=40)
QUICK = HttpSizes(posts=300, batch_jobs=2000, batches=1, list_reps=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """``queuectl serve`` on a queue, with a read+enqueue token."""

    def __init__(self, queuectl: list[str], env: dict[str, str], cwd: str, procs: Any) -> None:
        made = subprocess.run(
            [
                *queuectl,
                "token",
                "create",
                "--scope",
                "read,enqueue",
                "--name",
                f"bench-{os.getpid()}-{time.time_ns()}",
            ],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = made.stdout.strip()
        self.port = free_port()
        self.procs = procs
        self.proc = procs.spawn(
            [*queuectl, "serve", "--port", str(self.port)], env=env, cwd=cwd, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = request(self.connect(), "GET", "/healthz", {})
                if status == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("queuectl serve did not start")
            time.sleep(0.1)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def stop(self) -> None:
        self.procs.stop(self.proc, grace=10.0)


def request(
    conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def hammer(
    serve: Serve, total: int, make: Callable[[int], tuple[str, str, dict[str, str], bytes, int]]
) -> tuple[float, list[float]]:
    """``total`` requests from CLIENTS keep-alive connections; returns (requests/s, latencies ms)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        conn = serve.connect()
        mine: list[float] = []
        for n in counter:  # shared: each request taken once, by whichever client is free
            method, path, headers, body, expected = make(n)
            started = time.perf_counter()
            status, data = request(conn, method, path, headers, body)
            mine.append((time.perf_counter() - started) * 1000)
            if status != expected:
                errors.append(f"{method} {path}: {status} {data[:200]!r}")
                return
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return total / elapsed, latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def scenario(
    bench: Any,
    backend: str,
    run: int,
    target: Any,
    at_least: Any,
    failure: type[Exception],
    big_store: Callable[[Any], str],
) -> None:
    """The ``http`` scenario of bench.py (``target``/``at_least`` make its Target rows)."""
    res = bench.results
    sizes = QUICK if bench.args.quick else FULL
    p = f"{backend}.http"
    base_rps = res.define(f"{p}.healthz.rps", f"GET /healthz, {CLIENTS} clients", "req/s")
    base_p50 = res.define(f"{p}.healthz.p50", "GET /healthz p50", "ms")
    base_p99 = res.define(f"{p}.healthz.p99", "GET /healthz p99", "ms")
    base_one = res.define(f"{p}.healthz.single", "GET /healthz, 1 client", "ms")
    post_rps = res.define(
        f"{p}.post.rps", f"POST /api/jobs, {CLIENTS} clients", "req/s", base_rps, at_least(1000, ">= 1,000/s")
    )
    post_p50 = res.define(f"{p}.post.p50", "POST /api/jobs p50", "ms", base_p50)
    post_p99 = res.define(f"{p}.post.p99", "POST /api/jobs p99", "ms", base_p99, target("value", 25, "<= 25 ms"))
    batch = res.define(
        f"{p}.batch.jobs_per_s",
        f"POST /api/jobs:batch ({sizes.batch_jobs} jobs)",
        "jobs/s",
        base_rps,
        at_least(20_000, ">= 20,000/s"),
    )
    n = bench.sizes.scale_jobs
    listing = res.define(
        f"{p}.list.big",
        f"GET /api/jobs?state=completed&limit=50, {n} jobs",
        "ms",
        base_one,
        target("value", 50, "<= 50 ms"),
    )
    try:
        with bench.queue(backend, "http") as queue:
            serve = Serve(bench.queuectl, queue.env, queue.dir, procs_of(bench))
            try:
                healthz = ("GET", "/healthz", {}, b"", 200)
                body = json.dumps({"command": "true"}).encode()
                post = ("POST", "/api/jobs", serve.headers(**{"Content-Type": "application/json"}), body, 202)
                hammer(serve, 100, lambda _: healthz)  # warm up both paths
                hammer(serve, 100, lambda _: post)
                rps, lat = hammer(serve, sizes.posts, lambda _: healthz)
                res.add(base_rps, run, rps)
                res.add(base_p50, run, statistics.median(lat))
                res.add(base_p99, run, pct(lat, 99))
                rps, lat = hammer(serve, sizes.posts, lambda _: post)
                res.add(post_rps, run, rps)
                res.add(post_p50, run, statistics.median(lat))
                res.add(post_p99, run, pct(lat, 99))
                ndjson = b"".join(b'{"command": "true"}\n' for _ in range(sizes.batch_jobs))
                conn = serve.connect()
                for _ in range(sizes.batches):
                    started = time.perf_counter()
                    status, data = request(conn, "POST", "/api/jobs:batch", serve.headers(), ndjson)
                    if status != 202:
                        raise failure(f"batch: {status} {data[:200]!r}")
                    res.add(batch, run, sizes.batch_jobs / (time.perf_counter() - started))
                conn.close()
            finally:
                serve.stop()
            expected = 100 + sizes.posts + sizes.batch_jobs * sizes.batches
            queue.expect_all("pending", expected, f"http enqueue on {backend}")
        if backend != "sqlite":
            return
        big = big_store(bench)
        env = {**queue.env, "QUEUECTL_DB": f"sqlite:///{big}"}
        serve = Serve(bench.queuectl, env, os.path.dirname(big), procs_of(bench))
        try:
            conn = serve.connect()
            path = "/api/jobs?state=completed&limit=50"
            for _ in range(3):
                request(conn, "GET", path, serve.headers())  # warm the page cache
            for _ in range(sizes.list_reps):
                started = time.perf_counter()
                request(conn, "GET", "/healthz", {})
                res.add(base_one, run, (time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                status, data = request(conn, "GET", path, serve.headers())
                res.add(listing, run, (time.perf_counter() - started) * 1000)
                if status != 200 or len(json.loads(data)["jobs"]) != 50:
                    raise failure(f"list at scale: {status} {data[:200]!r}")
            conn.close()
        finally:
            serve.stop()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        raise failure(f"http: {exc}") from None


def procs_of(bench: Any) -> Any:
    return sys.modules[type(bench).__module__].PROCS
