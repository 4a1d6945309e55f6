"""A ledger of job runs, written by the jobs themselves, and the invariants it must satisfy.

Every test job runs :func:`ledger_command`: a small ``sh`` script around the test's ``body`` that
appends one line when it starts and one when it ends to a shared ledger file (``>>`` is
``O_APPEND``: one short ``printf`` per line, so lines never interleave)::

    ID RUN PID start TIMESTAMP WORKER
    ID RUN PID end   TIMESTAMP WORKER STATUS

- ``RUN``: the run number of this job, 1, 2, 3 ... in the order runs started. The job cannot know
  its attempt number (the store's ``attempts``), so each run takes the next free number itself by
  ``mkdir RUNS/ID.N``: ``mkdir`` is atomic, so two runs of one job, even at the same moment, never
  get the same number, and the directories left behind count every shell that ever started.
- ``PID``: the job's shell (``$$``); killing the job's process group kills it.
- ``TIMESTAMP``: wall clock (``date +%s.%N``), the clock ``time.time()`` and the store use.
- ``WORKER``: ``$PPID``, the pid of the worker process that started the run (jobs are started by
  the worker itself, so the shell's parent *is* the worker). Exception: a worker SIGKILLed between
  starting the shell and the shell reading ``$PPID`` leaves a shell already re-parented to the
  supervisor (the child subreaper), whose pid it then records (see ``adopters`` below).
- ``STATUS``: the body's exit status, or ``term`` when the run was stopped by SIGTERM (a worker
  shutdown or a timeout: the script traps TERM, records it, and exits 143). A run stopped by
  SIGKILL (its worker died, or lost its lease) writes no ``end`` line at all.

The body runs in a subshell, so ``exit 3`` in it still gets its ``end`` line; it may read
``$ql_run`` (this run's number) to behave differently on a retry, and ``$PPID`` is the worker.
``QL_LEDGER`` is exported, so every process a run starts can be found afterwards (I1).

:func:`check_invariants` compares the ledger with the store. Its docstring defines I1-I3.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any, Collection, Mapping

FINAL_STATES = ("completed", "dead", "cancelled")
TERM = "term"


def runs_dir(ledger_path: str | os.PathLike[str]) -> Path:
    """Where the run-number directories of a ledger live (``LEDGER.runs``)."""
    return Path(f"{os.fspath(ledger_path)}.runs")


def ledger_command(ledger_path: str | os.PathLike[str], job_id: str, body: str = "true") -> str:
    """The shell command for job ``job_id``: record start, run ``body``, record end (see module doc)."""
    runs = runs_dir(ledger_path)
    runs.mkdir(parents=True, exist_ok=True)
    led, jid, slot = quote(os.fspath(ledger_path)), quote(job_id), quote(f"{runs}/{job_id}.")
    line = "printf '%s %s %s {event} %s %s{extra}\\n' " + jid + ' "$ql_run" "$$" "$(date +%s.%N)" "$PPID"'
    start = line.format(event="start", extra="")
    end = line.format(event="end", extra=" %s") + ' "$ql_status"'
    term = line.format(event="end", extra=" " + TERM)
    return (
        f"QL_LEDGER={quote(os.fspath(runs))}; export QL_LEDGER\n"  # marks every descendant
        f'ql_term() {{ if [ -n "$ql_run" ]; then {term} >> {led}; fi; exit 143; }}\n'
        f"trap ql_term TERM\n"
        f"ql_n=1; while ! mkdir {slot}$ql_n 2>/dev/null; do\n"
        f"  ql_n=$((ql_n + 1)); [ $ql_n -le 10000 ] || exit 97\n"
        f"done; ql_run=$ql_n\n"
        f"{start} >> {led}\n"
        f"( {body}\n)\n"
        f"ql_status=$?\n"
        f"{end} >> {led}\n"
        f"exit $ql_status"
    )


# --- reading ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One run of one job, as the ledger and the runs directory know it."""

    job_id: str
    number: int
    pid: int | None = None
    worker: int | None = None
    start: float | None = None  # None: the shell started (took a number) but died before writing
    end: float | None = None  # None: killed by SIGKILL (or still running)
    status: str | None = None  # "0", "3", ... or "term"
    problems: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == "0"

    def __str__(self) -> str:
        ended = f"end {self.end:.3f} status {self.status}" if self.end is not None else "no end"
        started = f"start {self.start:.3f}" if self.start is not None else "no start"
        return f"{self.job_id} run {self.number} (pid {self.pid}, worker {self.worker}, {started}, {ended})"


def read_ledger(ledger_path: str | os.PathLike[str]) -> dict[str, dict[int, Run]]:
    """Every run of every job: ``{job_id: {run_number: Run}}``; malformed lines become problems."""
    runs: dict[str, dict[int, Run]] = {}

    def run_of(job_id: str, number: int) -> Run:
        return runs.setdefault(job_id, {}).setdefault(number, Run(job_id, number))

    folder = runs_dir(ledger_path)
    if folder.is_dir():
        for name in os.listdir(folder):
            job_id, _, number = name.rpartition(".")
            if job_id and number.isdigit():
                run_of(job_id, int(number))
    try:
        text = Path(ledger_path).read_text()
    except FileNotFoundError:
        text = ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        try:
            job_id, number, pid, event, stamp, worker = parts[:6]
            run = run_of(job_id, int(number))
            values = (int(pid), int(worker), float(stamp))
        except ValueError:
            runs.setdefault("<malformed>", {}).setdefault(lineno, Run("<malformed>", lineno)).problems.append(
                f"ledger line {lineno} is malformed: {line!r}"
            )
            continue
        if event == "start" and len(parts) == 6:
            if run.start is not None:
                run.problems.append(f"two start lines (line {lineno})")
            run.pid, run.worker, run.start = values
        elif event == "end" and len(parts) == 7:
            if run.end is not None:
                run.problems.append(f"two end lines (line {lineno})")
            run.pid, run.worker, run.end = values
            run.status = parts[6]
        else:
            run.problems.append(f"ledger line {lineno} is malformed: {line!r}")
    return runs


def live_runs(ledger_path: str | os.PathLike[str]) -> list[int]:
    """Live processes of this ledger's jobs: a job's shell (its command line names the ledger) and
    everything it started (``QL_LEDGER`` in their environment): ``sleep``, ``date``, ..."""
    needle = os.fspath(runs_dir(ledger_path)).encode()
    marker = b"QL_LEDGER=" + needle
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                ours = needle in handle.read()
            if not ours:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    ours = marker in handle.read().split(b"\0")
        except (OSError, IndexError):
            continue
        if ours and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


# --- checking ---------------------------------------------------------------------------------


@dataclass
class Duplicate:
    """A run that repeats a job whose previous run did not genuinely fail (the at-least-once cost)."""

    earlier: Run
    later: Run
    overlapping: bool  # the earlier run had not ended (or ended later) when the later one started
    after_revoked: bool  # the earlier run's worker is one the caller killed or froze

    def __str__(self) -> str:
        how = "overlapping" if self.overlapping else "sequential"
        return f"{how} re-run {self.later} after {self.earlier}; revoked={self.after_revoked}"


@dataclass
class Report:
    """What :func:`check_invariants` saw; ``problems`` is empty when every invariant held."""

    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    ledger_jobs: int = 0
    runs: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        overlapping = sum(d.overlapping for d in self.duplicates)
        revoked = sum(d.after_revoked for d in self.duplicates)
        return (
            f"{self.jobs} jobs {dict(self.states)}; {self.runs} runs of {self.ledger_jobs} ledger "
            f"jobs; {len(self.duplicates)} duplicate runs ({overlapping} overlapping), "
            f"{revoked} of them after a revoked lease"
        )


class InvariantViolation(AssertionError):
    def __init__(self, report: Report) -> None:
        shown = "\n  ".join(report.problems[:40])
        more = f"\n  ... and {len(report.problems) - 40} more" if len(report.problems) > 40 else ""
        super().__init__(f"{len(report.problems)} invariant violation(s):\n  {shown}{more}\n{report.summary()}")
        self.report = report


def _all_jobs(store: Any) -> list[Any]:
    return list(store.list_jobs(limit=10**9))


def check_invariants(
    store: Any,
    ledger_path: str | os.PathLike[str],
    lease: float,
    *,
    heartbeat: float = 0.0,
    revoked: Mapping[int, float | None] | None = None,
    attempts_reset: Collection[str] = (),
    adopters: Collection[int] = (),
    slack: float = 0.5,
    settle: float = 3.0,
    orphan_grace: float | None = None,
    raise_on_failure: bool = True,
) -> Report:
    """Check I1-I3 between ``store`` and the ledger; raises :class:`InvariantViolation` listing all.

    Call it once the test expects every job to be finished. ``revoked`` names the workers whose
    lease the caller revoked: ``{worker pid: time.time() at or before which it stopped
    heartbeating}`` (SIGKILLed, SIGSTOPped, or killed by a fault point / its own job; ``None`` when
    the moment is not known). ``attempts_reset`` lists jobs put back by ``dlq retry`` (attempts
    reset to 0). ``adopters`` are the pids of supervisors (child subreapers): a run whose WORKER is
    one of them was started by a worker killed before the shell read ``$PPID``, so the shell was
    already re-parented; it counts as a run of a revoked worker, moment unknown.

    Definitions: for a ledger job, S = the runs whose shell started (run numbers taken), T = the
    runs that ended ``term`` (stopped by SIGTERM: a shutdown, which gives the attempt back; ledger
    jobs in these tests have no timeout), ``attempts`` = the store's count.

    I1 - everything finished: every job in the store is completed, dead or cancelled; none holds a
      lock or a lease; and within ``settle`` seconds no process is left running a ledger command.
      With ``orphan_grace`` (for callers whose revoked workers were all SIGKILLed, not frozen): no
      run of a revoked worker ended more than ``orphan_grace`` seconds after the worker was killed
      (its orphaned process group was killed at once, not left to finish).

    I2 - no concurrent or repeated run without a revoked lease. For runs a < b of one job:
      (a) each run has at most one start and one end line, and ends after it started;
      (b) if a had not ended when b started (no end line: killed, so its end is unknown; or an end
          after b's start), a's worker is revoked, and b started no sooner than
          ``revoked[a.worker] + lease - heartbeat - slack`` (its lease had to run out first: the
          last heartbeat was at most one heartbeat before the worker stopped);
      (c) if a succeeded (status 0), b may only exist when a's worker is revoked (it died before
          recording the success);
      (d) no run of a finished job starts after its ``finished_at`` unless its worker is revoked.

    I3 - the store agrees with the ledger. For every ledger job:
      (a) it exists in the store (and every store job whose command is a ledger command of this
          ledger has run, unless it is cancelled or dead: a dead job may never have started);
      (b) completed: exit_code 0, 1 <= attempts <= max_retries + 1, and some run ended with status
          0 having started before ``finished_at``;
      (c) dead: attempts == max_retries + 1 (attempts count at claim time), and a recorded positive
          exit code is the status of some run (143 may be a ``term``);
      (d) S - T <= attempts (a counted attempt starts at most one shell; a claim whose worker died
          before the shell started counts but has no run); and when no worker was revoked at all,
          S - T == attempts exactly (every counted attempt left its run in the ledger). Jobs in
          ``attempts_reset`` skip (d).
    """
    revoked = dict(revoked or {})
    report = Report()
    problems = report.problems
    jobs = {job.id: job for job in _all_jobs(store)}
    report.jobs = len(jobs)
    report.states = Counter(job.state for job in jobs.values())
    runs = read_ledger(ledger_path)
    for run in runs.pop("<malformed>", {}).values():
        problems.extend(run.problems)
    report.ledger_jobs = len(runs)
    for per_job in runs.values():
        for run in per_job.values():
            if run.worker is not None and run.worker in adopters:
                revoked.setdefault(run.worker, None)
    report.runs = sum(len(per_job) for per_job in runs.values())

    # I1
    for job in jobs.values():
        if job.state not in FINAL_STATES:
            problems.append(f"I1: job {job.id} is {job.state} (attempts {job.attempts}), not finished")
        if job.locked_by is not None or job.lease_expires_at is not None:
            problems.append(f"I1: job {job.id} ({job.state}) still locked by {job.locked_by}")
    deadline = time.monotonic() + settle
    while (alive := live_runs(ledger_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        problems.append(f"I1: processes still running ledger commands: {alive}")
    if orphan_grace is not None:
        for per_job in runs.values():
            for run in per_job.values():
                killed = revoked.get(run.worker) if run.worker is not None else None
                if killed is not None and run.end is not None and run.end > killed + orphan_grace:
                    problems.append(
                        f"I1: {run} ended {run.end - killed:.2f}s after its worker was killed: an orphan outlived it"
                    )

    # I2
    marker = os.fspath(runs_dir(ledger_path))
    for job_id, per_job in runs.items():
        ordered = [per_job[n] for n in sorted(per_job)]
        job = jobs.get(job_id)
        for run in ordered:
            problems.extend(f"I2a: {run}: {text}" for text in run.problems)
            if run.start is not None and run.end is not None and run.end < run.start:
                problems.append(f"I2a: {run} ended before it started")
            if (
                job is not None
                and job.state in FINAL_STATES
                and job.finished_at is not None
                and run.start is not None
                and run.start > job.finished_at
                and run.worker not in revoked
            ):
                problems.append(
                    f"I2d: {run} started {run.start - job.finished_at:.3f}s after job {job_id} finished ({job.state})"
                )
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                overlapping = a.end is None or (b.start is not None and a.end > b.start)
                follows = b.number == a.number + 1
                if overlapping:
                    if a.worker is None and revoked:
                        pass  # killed before it wrote anything: some revoked worker ran it
                    elif a.worker not in revoked:
                        problems.append(f"I2b: {b} overlaps {a}, whose worker was not revoked")
                    elif (
                        (when := revoked[a.worker]) is not None
                        and b.start is not None
                        and b.start < when + lease - heartbeat - slack
                    ):
                        problems.append(
                            f"I2b: {b} started {b.start - when:.3f}s after worker {a.worker} was "
                            f"revoked, before its lease ({lease:g}s) could have run out"
                        )
                if a.succeeded and follows and a.worker not in revoked:
                    problems.append(f"I2c: {b} re-ran a job whose {a} had succeeded on a live worker")
                if follows and (overlapping or a.succeeded):
                    report.duplicates.append(Duplicate(a, b, overlapping, a.worker in revoked or a.worker is None))

    # I3
    for job_id, per_job in runs.items():
        job = jobs.get(job_id)
        if job is None:
            problems.append(f"I3a: job {job_id} ran ({len(per_job)} runs) but is not in the store")
            continue
        ordered = [per_job[n] for n in sorted(per_job)]
        statuses = {run.status for run in ordered if run.status is not None}
        if job.state == "completed":
            if job.exit_code != 0:
                problems.append(f"I3b: job {job_id} completed with exit code {job.exit_code}")
            if not 1 <= job.attempts <= job.max_retries + 1:
                problems.append(
                    f"I3b: job {job_id} completed after {job.attempts} attempts (max_retries {job.max_retries})"
                )
            if not any(
                run.succeeded and run.start is not None and (job.finished_at is None or run.start < job.finished_at)
                for run in ordered
            ):
                problems.append(
                    f"I3b: job {job_id} is completed but no run of it succeeded: {[str(r) for r in ordered]}"
                )
        elif job.state == "dead":
            if job.attempts != job.max_retries + 1:
                problems.append(
                    f"I3c: job {job_id} is dead after {job.attempts} attempts, "
                    f"expected max_retries + 1 = {job.max_retries + 1}"
                )
            code = job.exit_code
            if code is not None and code > 0 and str(code) not in statuses and not (code == 143 and TERM in statuses):
                problems.append(
                    f"I3c: job {job_id} is dead with exit code {code}, which no run ended with ({sorted(statuses)})"
                )
        if job_id not in attempts_reset:
            started = len(ordered)
            interrupted = sum(run.status == TERM for run in ordered)
            if started - interrupted > job.attempts:
                problems.append(
                    f"I3d: job {job_id}: {started} runs ({interrupted} interrupted) "
                    f"but only {job.attempts} attempts counted"
                )
            if not revoked and started - interrupted != job.attempts:
                problems.append(
                    f"I3d: job {job_id}: {started} runs ({interrupted} interrupted) "
                    f"but {job.attempts} attempts counted, and no worker was revoked"
                )
    for job in jobs.values():
        if marker in job.command and job.id not in runs and job.state not in ("cancelled", "dead"):
            problems.append(f"I3a: ledger job {job.id} is {job.state} but never ran")

    if problems and raise_on_failure:
        raise InvariantViolation(report)
    return report
