#!/usr/bin/env python3
"""The 10M-job soak (issue 18, target 5): a queue of ten million jobs, a real drain, a big purge.

    python scripts/soak.py                    # 10,000,000 jobs, drain 1,000,000, purge 5,000,000
    python scripts/soak.py --small            # 200,000 / 20,000 / 100,000: about two minutes
    python scripts/soak.py --jobs 2000 --drain 200 --purge 1000 --dir /tmp/s --json out.json

One private SQLite queue (in ``--dir``, else a temporary folder, removed at the end unless
``--keep``) is filled with ``--jobs`` jobs, then, in this order:

1. **claim + finish at the start**: the in-process cost of one claim and one finish through the
   store, as a worker does them, on the full store, alternated with the same on a small
   reference store of the same schema (the baseline, measured in the same minutes);
2. **drain**: ``queuectl worker start --count 2 --queue soak --burst`` runs the ``--drain`` jobs
   (``true``) for real; the throughput of the first and of the last tenth (100,000 of 1,000,000)
   comes from the drained jobs' own start/finish times (the jobs run oldest first);
3. **claim + finish at the end**, the same way; the target is end / start ≤ 1.2;
4. **database size** on disk per job (the file, and its ``-wal`` beside it);
5. **purge**: two idle workers (``worker start --count 2``, heartbeat set to 1 s) run while
   ``queuectl purge --state completed --yes`` deletes the completed jobs; a thread reads the
   workers' registry rows every 20 ms and records, for each new heartbeat, how long after its
   time stamp it became visible (the wait for the write lock, plus at most one poll) and the gap
   since the previous one. The same is recorded for a few seconds before the purge: the baseline.

The shortcut, stated plainly: of the ``--purge`` completed jobs, only the ``--drain`` ones ran;
the other ``purge - drain`` are inserted already completed through the store's own bulk insert
(``lifecycle.enqueue`` of jobs in the completed state, as ``scripts/bench.py`` builds its scale
store), because running five million shell commands would take hours and measures nothing the
drain does not. Everything else goes through the CLI: the ``jobs - purge`` pending jobs
(``--drain`` of them in queue ``soak``, the rest in queue ``backlog``, never run) are enqueued
with ``queuectl enqueue --file``, and the drain and the purge are the real commands. Nothing
measured is simulated. Only the public CLI, the service functions and the store's contract are
used, so the script keeps working while their insides change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SMALL = (200_000, 20_000, 100_000)
FULL = (10_000_000, 1_000_000, 5_000_000)
INSERT_CHUNK = 50_000  # completed jobs per bulk insert (one transaction)
ENQUEUE_FILE_LINES = 50_000  # lines per `enqueue --file` call: each one transaction, not a staged batch
PROBE_CLAIMS = 50  # claim + finish per probe round
PROBE_ROUNDS = 6  # rounds per measuring point, alternating the full and the reference store
HEARTBEAT_S = 1.0  # the workers' heartbeat during the purge (the default is 5 s)
POLL_S = 0.02  # how often the registry is read during the purge
IDLE_BASELINE_S = 6.0  # heartbeats watched before the purge starts
QUEUE, BACKLOG = "soak", "backlog"


class SoakFailure(Exception):
    """Something the soak depends on did not happen (a command failed, a job was not drained)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=FULL[0], help="jobs in the store (default 10,000,000)")
    parser.add_argument("--drain", type=int, default=FULL[1], help="jobs run for real (default 1,000,000)")
    parser.add_argument("--purge", type=int, default=FULL[2], help="completed jobs purged (default 5,000,000)")
    parser.add_argument("--small", action="store_true", help="200,000 / 20,000 / 100,000 (about two minutes)")
    parser.add_argument("--dir", help="folder for the queue (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the folder and its database")
    parser.add_argument("--json", help="write the figures to this file as well")
    parser.add_argument(
        "--idle-baseline", type=float, default=IDLE_BASELINE_S, help="seconds of heartbeats watched before the purge"
    )
    args = parser.parse_args(argv)
    if args.small:
        args.jobs, args.drain, args.purge = SMALL
    if not 0 < args.drain <= args.purge <= args.jobs:
        parser.error("sizes must satisfy 0 < --drain <= --purge <= --jobs")
    return args


# --- running the CLI ----------------------------------------------------------------------------


@dataclass
class Soak:
    root: str
    db: str  # the SQLite file
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "QUEUECTL_DB": self.url}

    def cli(self, *args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
        """Run one queuectl command to its end; SoakFailure unless it exits 0."""
        ran = subprocess.run(
            [sys.executable, "-m", "queuectl", *args],
            env=self.env,
            cwd=self.root,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        if ran.returncode != 0:
            raise SoakFailure(f"queuectl {' '.join(args)}: exit {ran.returncode}: {ran.stderr.strip()[-500:]}")
        return ran

    def workers(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``worker start --count 2 ARGS`` in the background, logging to workers.log."""
        with open(os.path.join(self.root, "workers.log"), "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "queuectl", "worker", "start", "--count", "2", *args],
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def lines_file(soak: Soak, count: int) -> str:
    """A file of ``count`` lines ``true`` (written once per size)."""
    path = os.path.join(soak.root, f"true-{count}.txt")
    if not os.path.exists(path):
        with open(path, "w", encoding="ascii") as handle:
            handle.write("true\n" * count)
    return path


def enqueue_file(soak: Soak, count: int, queue: str) -> list[str]:
    """Enqueue ``count`` jobs ``true`` into ``queue`` through ``enqueue --file``; their ids in order."""
    ids: list[str] = []
    left = count
    while left:
        chunk = min(left, ENQUEUE_FILE_LINES)
        ran = soak.cli("enqueue", "--file", lines_file(soak, chunk), "--queue", queue)
        got = ran.stdout.split()
        if len(got) != chunk:
            raise SoakFailure(f"enqueue --file of {chunk} lines printed {len(got)} ids")
        ids += got
        left -= chunk
    return ids


# --- filling the store --------------------------------------------------------------------------


def insert_completed(url: str, count: int, queue: str = "done") -> None:
    """The documented shortcut: ``count`` jobs inserted already completed, through the store's
    bulk insert, finished during the last hour (the default retention, 7 days, leaves them be)."""
    from queuectl.core import lifecycle
    from queuectl.core.models import COMPLETED, Job, bulk_job_ids
    from queuectl.store import open_store

    new_job_id = bulk_job_ids().__next__  # as enqueue --file makes them: random ids cost 2x here
    store = open_store(url)
    start = time.time() - 3600
    step = 3000 / max(count, 1)
    try:
        for first in range(0, count, INSERT_CHUNK):
            jobs = []
            for i in range(first, min(count, first + INSERT_CHUNK)):
                t = start + i * step
                jobs.append(
                    Job(
                        id=new_job_id(),
                        command="true",
                        queue=queue,
                        state=COMPLETED,
                        attempts=1,
                        run_at=t,
                        created_at=t,
                        updated_at=t + 0.01,
                        started_at=t,
                        finished_at=t + 0.01,
                        duration=0.01,
                        exit_code=0,
                        output="",
                    )
                )
            lifecycle.enqueue(store, jobs)
    finally:
        store.close()


def fill(soak: Soak, jobs: int, drain: int, purge: int) -> list[str]:
    """The store of ``jobs`` jobs: completed ones (the shortcut), a backlog, the drain queue.
    Returns the ids of the drain queue's jobs, oldest first."""
    soak.cli("status")  # creates the database
    started = time.perf_counter()
    insert_completed(soak.url, purge - drain)
    inserted = time.perf_counter() - started
    soak.say(f"inserted {purge - drain:,} completed jobs in {inserted:.1f}s (the shortcut)")
    pending = jobs - (purge - drain)
    started = time.perf_counter()
    enqueue_file(soak, pending - drain, BACKLOG)
    ids = enqueue_file(soak, drain, QUEUE)
    enqueued = time.perf_counter() - started
    soak.say(f"enqueued {pending:,} pending jobs with enqueue --file in {enqueued:.1f}s")
    soak.figures["fill"] = {
        "completed_inserted": purge - drain,
        "insert_seconds": round(inserted, 1),
        "pending_enqueued": pending,
        "enqueue_seconds": round(enqueued, 1),
        "enqueue_jobs_per_s": round(pending / enqueued),
    }
    return ids


def reference_store(soak: Soak) -> str:
    """The baseline: a small store of the same schema, with enough pending jobs for every probe."""
    from queuectl.core import lifecycle
    from queuectl.core.models import Job, new_job_id
    from queuectl.store import open_store

    url = f"sqlite:///{os.path.join(soak.root, 'reference.db')}"
    store = open_store(url)
    try:
        now = time.time()
        claims = PROBE_CLAIMS * PROBE_ROUNDS * 4
        lifecycle.enqueue(
            store,
            [Job(id=new_job_id(), command="true", run_at=now, created_at=now + i * 1e-6) for i in range(claims)],
        )
    finally:
        store.close()
    return url


# --- measuring ----------------------------------------------------------------------------------


def claim_finish_ms(url: str, claims: int) -> float:
    """Mean ms of one claim + finish (any queue), as a worker does them, in this process."""
    from queuectl.core import lifecycle
    from queuectl.core.models import COMPLETED, Lease, Outcome
    from queuectl.store import open_store

    store = open_store(url)
    try:
        start = time.perf_counter()
        for _ in range(claims):
            jobs = store.claim("soak-probe", None, time.time(), 30.0, 1)
            if not jobs:
                raise SoakFailure(f"claim found no pending job in {url}")
            job = jobs[0]
            outcome = Outcome(COMPLETED, time.time(), exit_code=0, output="", duration=0.0)
            if not lifecycle.finish(store, Lease(job.id, "soak-probe", job.attempts), outcome):
                raise SoakFailure(f"finish of job {job.id} was refused")
        return (time.perf_counter() - start) / claims * 1000
    finally:
        store.close()


def probe(soak: Soak, reference: str, when: str) -> None:
    """claim + finish on the full store and on the reference, alternated: medians of the rounds."""
    full, small = [], []
    for _ in range(PROBE_ROUNDS):
        full.append(claim_finish_ms(soak.url, PROBE_CLAIMS))
        small.append(claim_finish_ms(reference, PROBE_CLAIMS))
    full_ms, small_ms = statistics.median(full), statistics.median(small)
    result = {
        "full_ms": round(full_ms, 3),
        "reference_ms": round(small_ms, 3),
        "full_range_ms": [round(min(full), 3), round(max(full), 3)],
        "reference_range_ms": [round(min(small), 3), round(max(small), 3)],
        "ratio_to_reference": round(full_ms / small_ms, 2),
    }
    soak.figures[f"claim_finish_{when}"] = result
    soak.say(
        f"claim+finish ({when}): {result['full_ms']} ms on the full store, "
        f"{result['reference_ms']} ms on the reference ({result['ratio_to_reference']}x)"
    )


def drain(soak: Soak, ids: list[str]) -> None:
    """Run the drain queue's jobs with two burst workers; throughput of the first and last tenth."""
    from queuectl.core.models import COMPLETED
    from queuectl.store import open_store

    started = time.time()
    proc = soak.workers("--queue", QUEUE, "--burst")
    marks = [ids[len(ids) * k // 10 - 1] for k in range(1, 11)]
    store = open_store(soak.url)
    try:
        said = time.monotonic()
        while proc.poll() is None:
            time.sleep(0.5)
            if time.monotonic() - said > 15:
                states = store.job_states(marks)
                done = sum(state == COMPLETED for state in states.values())
                soak.say(f"draining: {done * 10}% after {time.time() - started:.0f}s")
                said = time.monotonic()
        if proc.returncode != 0:
            raise SoakFailure(f"worker start --burst exited {proc.returncode}: see {soak.root}/workers.log")
        wall = time.time() - started
        window = max(1, len(ids) // 10)
        first, at_window = store.get(ids[0]), store.get(ids[window - 1])
        before_last, last = store.get(ids[-window - 1] if window < len(ids) else ids[0]), store.get(ids[-1])
        for job in (first, at_window, before_last, last):
            if job is None or job.state != COMPLETED:
                raise SoakFailure(f"a drained job is not completed: {job}")
        assert first and at_window and before_last and last  # for mypy: checked above
        assert first.started_at and at_window.finished_at and before_last.finished_at and last.finished_at
        first_rate = window / (at_window.finished_at - first.started_at)
        last_rate = window / (last.finished_at - before_last.finished_at)
    finally:
        store.close()
    soak.figures["drain"] = {
        "jobs": len(ids),
        "wall_seconds": round(wall, 1),
        "jobs_per_s": round(len(ids) / wall),
        "window": window,
        "first_window_jobs_per_s": round(first_rate),
        "last_window_jobs_per_s": round(last_rate),
        "last_to_first": round(last_rate / first_rate, 2),
    }
    soak.say(f"drained {len(ids):,} in {wall:.0f}s: first {window:,} at {first_rate:.0f}/s, last at {last_rate:.0f}/s")


def disk_size(soak: Soak, jobs: int, when: str) -> None:
    main = os.path.getsize(soak.db)
    wal = os.path.getsize(soak.db + "-wal") if os.path.exists(soak.db + "-wal") else 0
    soak.figures[f"disk_{when}"] = {
        "db_bytes": main,
        "wal_bytes": wal,
        "jobs": jobs,
        "bytes_per_job": round(main / jobs) if jobs else None,
    }
    soak.say(f"disk ({when}): {main / 2**20:,.0f} MB + WAL {wal / 2**20:,.0f} MB for {jobs:,} jobs")


class HeartbeatWatch(threading.Thread):
    """Reads the workers' registry rows every POLL_S; for each new heartbeat, records how long
    after its stamp it was seen (the write's wait, plus at most a poll) and the gap since the last."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.phase = "idle"
        self.samples: list[tuple[str, float, float]] = []  # (phase, seen - stamp, gap)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from queuectl.service.workers import list_workers
        from queuectl.store import open_store

        store = open_store(self.url)
        last: dict[str, float] = {}
        try:
            while not self.stop_event.wait(POLL_S):
                seen = time.time()
                for worker in list_workers(store):
                    stamp = worker.last_heartbeat
                    if worker.state != "running" or stamp is None or last.get(worker.id) == stamp:
                        continue
                    if worker.id in last:
                        self.samples.append((self.phase, seen - stamp, stamp - last[worker.id]))
                    last[worker.id] = stamp
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            store.close()

    def summary(self, phase: str) -> dict[str, Any]:
        waits = [wait for p, wait, _ in self.samples if p == phase]
        gaps = [gap for p, _, gap in self.samples if p == phase]
        if not waits:
            return {"heartbeats": 0}
        return {
            "heartbeats": len(waits),
            "max_wait_s": round(max(waits), 3),
            "median_wait_s": round(statistics.median(waits), 3),
            "max_gap_s": round(max(gaps), 3),
            "waits_over_1s": sum(wait > 1.0 for wait in waits),
        }


def purge(soak: Soak, idle_baseline: float) -> None:
    """``purge --state completed --yes`` while two idle workers heartbeat every second."""
    soak.cli("config", "set", "heartbeat", f"{HEARTBEAT_S:g}s")
    proc = soak.workers("--queue", QUEUE)
    watch = HeartbeatWatch(soak.url)
    try:
        from queuectl.service.workers import list_workers
        from queuectl.store import open_store

        store = open_store(soak.url)
        try:
            deadline = time.monotonic() + 60
            while sum(w.state == "running" for w in list_workers(store)) < 2:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SoakFailure(f"two workers did not register: see {soak.root}/workers.log")
                time.sleep(0.1)
        finally:
            store.close()
        watch.start()
        time.sleep(idle_baseline)
        watch.phase = "purge"
        started = time.perf_counter()
        ran = soak.cli("purge", "--state", "completed", "--yes")
        seconds = time.perf_counter() - started
        watch.phase = "after"
        time.sleep(2 * HEARTBEAT_S)  # the beats that waited for the purge's last batch
    finally:
        watch.stop_event.set()
        watch.join(5)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if watch.error is not None:
        raise SoakFailure(f"reading the heartbeats failed: {watch.error}")
    deleted = int(ran.stdout.split()[1])
    soak.figures["purge"] = {
        "deleted": deleted,
        "seconds": round(seconds, 1),
        "jobs_per_s": round(deleted / seconds),
        "heartbeats_idle": watch.summary("idle"),
        "heartbeats_during_purge": watch.summary("purge"),
    }
    soak.say(f"purged {deleted:,} in {seconds:.1f}s; heartbeats: {soak.figures['purge']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.dir or tempfile.mkdtemp(prefix="queuectl-soak-")
    os.makedirs(root, mode=0o700, exist_ok=True)
    soak = Soak(root, os.path.join(root, "queue.db"))
    soak.figures["sizes"] = {"jobs": args.jobs, "drain": args.drain, "purge": args.purge}
    soak.figures["probe_claims"] = PROBE_CLAIMS * PROBE_ROUNDS  # per measuring point, on each store
    try:
        soak.say(f"soak in {root}: {args.jobs:,} jobs, drain {args.drain:,}, purge {args.purge:,}")
        ids = fill(soak, args.jobs, args.drain, args.purge)
        disk_size(soak, args.jobs, "filled")
        reference = reference_store(soak)
        probe(soak, reference, "start")
        drain(soak, ids)
        probe(soak, reference, "end")
        start, end = soak.figures["claim_finish_start"], soak.figures["claim_finish_end"]
        soak.figures["claim_finish_end_to_start"] = {
            "raw": round(end["full_ms"] / start["full_ms"], 2),
            "relative_to_reference": round(end["ratio_to_reference"] / start["ratio_to_reference"], 2),
        }
        purge(soak, args.idle_baseline)
        disk_size(soak, args.jobs - soak.figures["purge"]["deleted"], "purged")
        probe(soak, reference, "after_purge")
    except SoakFailure as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(soak.figures, handle, indent=2)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(soak.figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
