"""How long one dashboard refresh (and one metrics scrape) takes on a big SQLite queue.

    python scripts/bench_dashboard.py /tmp/big.db --jobs 1000000

Builds the queue on the first run (a minute or two for a million jobs; reused afterwards), then
times ``collect`` (every store read of a refresh), ``render`` and the metrics exposition.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

from queuectl.core import lifecycle
from queuectl.core.models import Job, WorkerInfo
from queuectl.service import queues as queue_service
from queuectl.service import workers as worker_service
from queuectl.service.dashboard import collect
from queuectl.store.sql.sqlite import SqliteStore


def build(store: SqliteStore, count: int, now: float) -> None:
    rng = random.Random(7)
    states = ["completed"] * 97 + ["pending", "failed", "dead"]

    def jobs():
        for i in range(count):
            state = states[i % len(states)]
            created = now - 7200 + 7200 * i / count
            duration = rng.uniform(0.05, 3.0)
            done = state in ("completed", "dead")
            yield Job(
                id=f"b{i:09d}",
                command=f"./task.sh {i}",
                state=state,
                queue=f"q{i % 4}",
                attempts=0 if state == "pending" else 1,
                run_at=created,
                created_at=created,
                updated_at=created + duration,
                started_at=None if state == "pending" else created,
                finished_at=created + duration if done else None,
                duration=duration if state == "completed" else None,
                exit_code=0 if state == "completed" else (None if state == "pending" else 1),
                last_error="exit code 1" if state in ("failed", "dead") else None,
                output=f"line {i}\n",
            )

    started = time.perf_counter()
    lifecycle.enqueue(store, jobs())
    print(f"built {count:,} jobs in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    for n in range(8):
        worker_service.register_worker(
            store,
            WorkerInfo(
                id=f"w{n}",
                host="bench",
                pid=1000 + n,
                state="running",
                started_at=now,
                last_heartbeat=now - (120 if n == 0 else 1),
                current_jobs=[f"b{n:09d}"],
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    fresh = not os.path.exists(args.path)
    store = SqliteStore(args.path)
    now = time.time()
    if fresh:
        build(store, args.jobs, now)
    total = sum(sum(per.values()) for per in store.counts().values())
    print(f"{total:,} jobs in {args.path}")

    from rich.console import Console

    from queuectl.cli.dashboard_view import render
    from queuectl.web.metrics import exposition

    def timed(fn, runs: int) -> tuple[float, float]:
        fn()  # warm the page cache once
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000, max(samples) * 1000

    console = Console(file=open(os.devnull, "w"), width=160, height=50, force_terminal=True)
    reads = {
        "counts": store.counts,
        "throughput(now-900, 60)": lambda: store.throughput(time.time() - 900, 60),
        "next_due(None)": lambda: store.next_due(None),
        "recent_failures(5)": lambda: store.recent_failures(5),
        "list_workers + 8 get": lambda: [
            store.get(j) for w in worker_service.list_workers(store) for j in w.current_jobs
        ],
        "duration_totals": store.duration_totals,
    }
    for name, fn in reads.items():
        median, worst = timed(fn, args.runs)
        print(f"  {name:28s} median {median:8.1f} ms   max {worst:8.1f} ms")
    median, worst = timed(lambda: collect(store), args.runs)
    print(f"collect (one dashboard refresh): median {median:.1f} ms, max {worst:.1f} ms")
    queue_service.set_paused(store, "q3", True)  # a paused queue: the lag is then asked per ready queue
    try:
        median, worst = timed(lambda: collect(store), args.runs)
    finally:
        queue_service.set_paused(store, "q3", False)
    print(f"collect with a paused queue:     median {median:.1f} ms, max {worst:.1f} ms")
    snapshot = collect(store)
    median, worst = timed(lambda: console.print(render(snapshot, None, width=160, height=50)), args.runs)
    print(f"render at 160x50:                median {median:.1f} ms, max {worst:.1f} ms")
    median, worst = timed(lambda: exposition(store), max(3, args.runs // 4))
    print(f"metrics exposition:              median {median:.1f} ms, max {worst:.1f} ms")


if __name__ == "__main__":
    main()
