#!/usr/bin/env python3
"""Stress queuectl with worker crashes: K trivial jobs, W workers x C slots, random SIGKILLs.

A private SQLite queue in a temporary folder gets ``--jobs`` ledger jobs (see
``tests/integration/ledger.py``: each job records its own start and end). A supervisor
(``queuectl worker start --count W --concurrency C``) runs them while this script SIGKILLs one
random worker process every ``--kill-every`` seconds on average (the supervisor restarts it and
kills its orphaned jobs; their leases run out and other workers take the jobs back). Once every
job is finished it stops the supervisor, checks the invariants I1-I3 against the ledger, and
prints figures. Exit status: 0 if every invariant held, 1 if one failed, 2 on a timeout.

    python scripts/stress.py                      # 20,000 jobs, 8 workers x 4, a kill every 3 s
    python scripts/stress.py --quick              # 2,000 jobs, 4 x 2, a kill every second
    python scripts/stress.py --jobs 300 --workers 3 --concurrency 2 --kill-every 1 --seed 7
    python scripts/stress.py --db postgresql://user:pass@host/db   # a shared server (an empty queue)

Every process it starts runs in its own session and is killed on the way out (Ctrl-C too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from queuectl.service import config as config_service

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _load(name: str) -> Any:
    """A helper module of the integration tests (not a package on sys.path)."""
    spec = importlib.util.spec_from_file_location(
        f"queuectl_stress_{name}", REPO / "tests" / "integration" / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ledger = _load("ledger")
procs = _load("procs")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, help="jobs to run (default 20000; --quick 2000)")
    parser.add_argument("--workers", type=int, help="worker processes (default 8; --quick 4)")
    parser.add_argument("--concurrency", type=int, help="jobs per worker at once (default 4; --quick 2)")
    parser.add_argument(
        "--kill-every",
        type=float,
        help="mean seconds between SIGKILLs of a random worker; 0: none (default 3; --quick 1)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--quick", action="store_true", help="a smaller run with more frequent kills")
    parser.add_argument("--lease", type=float, default=2.0, help="lease in seconds (default 2)")
    parser.add_argument("--heartbeat", type=float, default=0.5, help="heartbeat in seconds (default 0.5)")
    parser.add_argument(
        "--max-retries",
        type=int,
        default=20,
        help="per job, so that crashes alone do not send jobs to the DLQ (default 20)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds (default: 120 + jobs / 20)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--db", default=None, help="the queue's URL, e.g. postgresql://... (its queue must be empty; default: SQLite)"
    )
    args = parser.parse_args(argv)
    quick = {"jobs": 2000, "workers": 4, "concurrency": 2, "kill_every": 1.0}
    full = {"jobs": 20000, "workers": 8, "concurrency": 4, "kill_every": 3.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    if args.timeout is None:
        args.timeout = 120 + args.jobs / 20
    if args.jobs < 1 or args.workers < 1 or args.concurrency < 1 or args.kill_every < 0:
        parser.error("--jobs, --workers and --concurrency must be positive, --kill-every >= 0")
    return args


def children_workers(sup_pid: int) -> list[int]:
    """The supervisor's live worker processes (not the orphaned jobs it adopted as subreaper)."""
    try:
        with open(f"/proc/{sup_pid}/task/{sup_pid}/children") as handle:
            pids = [int(pid) for pid in handle.read().split()]
    except OSError:
        return []
    workers = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"queuectl.runtime.worker" in handle.read():
                    workers.append(pid)
        except OSError:
            pass
    return workers


class Stress:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="queuectl-stress-"))
        self.db = self.root / "queue.db"
        self.ledger_path = self.root / "ledger"
        self.log_path = self.root / "supervisor.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        self.url = args.db or f"sqlite:///{self.db}"
        self.env.update(QUEUECTL_DB=self.url, XDG_DATA_HOME=str(self.root))
        self.marker = f"XDG_DATA_HOME={self.root}"
        self.sup: subprocess.Popen[bytes] | None = None
        self.revoked: dict[int, float] = {}
        self.held_at_kill = 0  # processing jobs locked by each victim just before it was killed
        self.store: Any = None

    def say(self, text: str) -> None:
        print(text, flush=True)

    # --- set up -----------------------------------------------------------------------------

    def prepare(self) -> None:
        from queuectl.service import jobs as service
        from queuectl.store import open_store, redact_url

        self.store = open_store(self.url)
        if self.store.counts():
            raise SystemExit(f"stress: the queue at {redact_url(self.url)} is not empty: use an empty one")
        for key, value in (
            ("heartbeat", self.args.heartbeat),
            ("lease", self.args.lease),
            ("poll-interval", 0.2),
            ("backoff-max", 0),
            ("shutdown-grace", 10),
            ("kill-grace", 1),
        ):
            config_service.set_config(self.store, key, str(value))
        width = len(str(self.args.jobs))
        specs = (
            {
                "id": f"s{n:0{width}d}",
                "max_retries": self.args.max_retries,
                "command": ledger.ledger_command(self.ledger_path, f"s{n:0{width}d}"),
            }
            for n in range(self.args.jobs)
        )
        started = time.monotonic()
        count = len(service.enqueue(self.store, specs))
        from queuectl.store import redact_url

        where = redact_url(self.url)
        self.say(f"enqueued {count} jobs in {time.monotonic() - started:.1f}s into {where}")

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "queuectl",
            "worker",
            "start",
            "--count",
            str(self.args.workers),
            "--concurrency",
            str(self.args.concurrency),
        ]
        with open(self.log_path, "ab") as log:
            self.sup = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    # --- the run ----------------------------------------------------------------------------

    def remaining(self) -> tuple[int, Counter[str]]:
        states: Counter[str] = Counter()
        for per_state in self.store.counts().values():
            states.update(per_state)
        return sum(n for s, n in states.items() if s not in ledger.FINAL_STATES), states

    def run(self) -> tuple[bool, float]:
        assert self.sup is not None
        rng = random.Random(self.args.seed)
        started = time.monotonic()
        deadline = started + self.args.timeout

        def next_kill_after(now: float) -> float:
            if not self.args.kill_every:
                return float("inf")
            return now + rng.uniform(0.5, 1.5) * self.args.kill_every

        next_kill = next_kill_after(started)
        next_report = started + 10
        while True:
            now = time.monotonic()
            left, states = self.remaining()
            if left == 0:
                return True, now - started
            if now >= deadline:
                self.say(f"TIMEOUT after {now - started:.0f}s: {dict(states)}")
                return False, now - started
            if self.sup.poll() is not None:
                self.say(f"the supervisor exited with {self.sup.returncode}")
                return False, now - started
            if now >= next_kill:
                workers = children_workers(self.sup.pid)
                if workers:
                    victim = rng.choice(sorted(workers))
                    prefix = f"w{victim}-"
                    held = [
                        job
                        for job in self.store.list_jobs(state="processing", limit=100_000)
                        if (job.locked_by or "").startswith(prefix)
                    ]
                    self.held_at_kill += len(held)
                    self.revoked[victim] = time.time()  # it heartbeats no more after this
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:
                        del self.revoked[victim]
                next_kill = next_kill_after(now)
            if now >= next_report:
                done = states.get("completed", 0)
                self.say(f"  {now - started:5.0f}s  {done} completed, {left} to go, {len(self.revoked)} kills")
                next_report = now + 10
            time.sleep(0.05)

    # --- tear down --------------------------------------------------------------------------

    def stop(self) -> None:
        if self.sup is not None and self.sup.poll() is None:
            self.sup.send_signal(signal.SIGTERM)
            try:
                self.sup.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.say("the supervisor did not stop within 20s: killing its session")
        if self.sup is not None:
            try:
                os.killpg(self.sup.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.sup.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        procs.kill_marked(self.marker, rounds=5)  # jobs run in sessions of their own

    def cleanup(self, keep: bool) -> None:
        if self.store is not None:
            self.store.close()
        if keep:
            self.say(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
            from queuectl.store.wake import wake_dir_for

            shutil.rmtree(wake_dir_for(str(self.db)), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stress = Stress(args)
    print(
        f"stress: {args.jobs} jobs, {args.workers} workers x {args.concurrency}, a SIGKILL every "
        f"~{args.kill_every:g}s, lease {args.lease:g}s, heartbeat {args.heartbeat:g}s, "
        f"seed {args.seed}",
        flush=True,
    )
    ok = False
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        stress.prepare()
        stress.start()
        finished, duration = stress.run()
        stress.stop()
        report = ledger.check_invariants(
            stress.store,
            stress.ledger_path,
            args.lease,
            heartbeat=args.heartbeat,
            revoked=stress.revoked,
            adopters=[stress.sup.pid] if stress.sup else [],
            slack=max(0.5, args.heartbeat),
            settle=5.0,
            orphan_grace=1.0,
            raise_on_failure=False,
        )
        log = stress.log_path.read_text(errors="replace")
        attempts = Counter(job.attempts for job in stress.store.list_jobs(limit=10**9))
        kinds = Counter(
            (
                "overlapping" if d.overlapping else "sequential",
                "after a revoked lease" if d.after_revoked else "NOT after a revoked lease",
            )
            for d in report.duplicates
        )
        figures = {
            "jobs": args.jobs,
            "workers x concurrency": f"{args.workers} x {args.concurrency}",
            "duration s": round(duration, 1),
            "jobs/s": round(args.jobs / duration, 1) if duration else None,
            "kills": len(stress.revoked),
            "worker restarts": log.count("restarting in"),
            "orphan groups killed": log.count("killing orphaned job process group"),
            "final states": dict(report.states),
            "attempts per job": dict(sorted(attempts.items())),
            "jobs held by workers when killed": stress.held_at_kill,
            "jobs claimed more than once": sum(n for a, n in attempts.items() if a > 1),
            "leases lost by live workers": log.count("lost the lease") + log.count("lease lost"),
            "runs": report.runs,
            "duplicate runs": len(report.duplicates),
            "duplicates by kind": {f"{a}, {b}": n for (a, b), n in sorted(kinds.items())},
            "database locked errors": log.lower().count("locked"),
        }
        print(json.dumps(figures, indent=2), flush=True)
        for duplicate in report.duplicates[:10]:
            print(f"  e.g. {duplicate}")
        if report.problems:
            print(f"INVARIANTS VIOLATED ({len(report.problems)}):")
            for problem in report.problems[:50]:
                print(f"  {problem}")
        else:
            print("invariants I1-I3: OK")
        ok = finished and not report.problems
        return 0 if ok else (2 if not finished else 1)
    finally:
        stress.stop()
        stress.cleanup(keep=args.keep or not ok)


if __name__ == "__main__":
    sys.exit(main())
