"""Jobs: enqueue, read, cancel, wait for, purge. One function per use case, for every front end.

Each function takes the store it works on and keeps no state; the rules themselves are in
:mod:`queuectl.core.lifecycle`, the checks of a job spec in :mod:`queuectl.core.validation`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.defaults import MAX_LINE_BYTES, PURGE_YIELD_S, RETENTION_BATCH
from queuectl.core.errors import Conflict, DuplicateJobId, InvalidInput, NotFound, UniqueKeyTaken
from queuectl.core.lifecycle import FINISHED
from queuectl.core.models import CANCELLED, COMPLETED, DEAD, Job, bulk_job_ids, new_job_id
from queuectl.core.validation import build_job, check_state, label_filters, parse_spec
from queuectl.service.config import load_config
from queuectl.store import Store

PROGRESS_EVERY = 1000  # lines between two reports to a progress bar


class _Clock:
    """Strictly increasing timestamps, so that jobs enqueued together keep their order (FIFO)."""

    def __init__(self, store: Store) -> None:
        self._last = 0.0
        self._now = store.now

    def __call__(self) -> float:
        self._last = max(self._now(), self._last + 1e-6)
        return self._last


def enqueue(store: Store, specs: Iterable[dict[str, Any]]) -> list[str]:
    """Validate and insert jobs, all or nothing; returns their ids in order."""
    config = load_config(store)
    clock = _Clock(store)
    ids: list[str] = []

    def jobs() -> Iterator[Job]:
        for spec in specs:
            job = build_job(spec, config, clock())
            ids.append(job.id)
            yield job

    lifecycle.enqueue(store, jobs())
    return ids


def enqueue_command(store: Store, text: str, options: dict[str, Any]) -> str:
    """One job from the command line: a shell command or a JSON job, with the options on top."""
    return enqueue(store, [{**parse_spec(text), **options}])[0]


def new_batch_id() -> str:
    """An id for one bulk enqueue: every job of it records it (``wait --batch``, ``list --batch``)."""
    return new_job_id()


def enqueue_lines(
    store: Store,
    lines: Iterable[str],
    overrides: dict[str, Any],
    progress: Callable[[int], None] | None = None,
    ids: Callable[[str], object] | None = None,
    batch: str | None = None,
) -> int:
    """Bulk enqueue from a file's lines (streamed; blank lines and # comments skipped).

    All or nothing: a bad line aborts the whole file, and the error names its line number and
    says that nothing was enqueued. The jobs share one batch id (their ``batch``); a file too
    long for one short transaction is staged. ``progress`` is told each line number read, now and then.
    ``ids``, when given, is called with each job id in file order; ``batch`` is the batch id (default: a new one).
    """
    config = load_config(store)
    clock = _Clock(store)
    current = [0]  # the line of the job being inserted: a parent refused names it
    # the lines of each id and unique key the file gives: a store's refusal cannot say which line
    ids_given, keys_given = _Lines(), _Lines()
    new_id = bulk_job_ids().__next__  # they count up: the id index grows at one place

    def jobs() -> Iterator[Job]:
        for number, line in enumerate(lines, start=1):
            if progress is not None and number % PROGRESS_EVERY == 0:
                progress(number)
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                spec = {**overrides, **parse_spec(line.rstrip("\r\n"))}
                job = build_job(spec, config, clock(), new_id)
            except InvalidInput as exc:
                raise InvalidInput(f"line {number}: {exc}; nothing was enqueued") from None
            if "id" in spec:
                ids_given.note(job.id, number)
            if job.unique_key is not None:
                keys_given.note(job.unique_key, number)
            current[0] = number
            if ids is not None:
                ids(job.id)
            yield job

    try:
        return lifecycle.enqueue(store, jobs(), batch=batch or new_batch_id())
    except DuplicateJobId as exc:
        if exc.job_id in ids_given.again:
            first, again = ids_given.first[exc.job_id], ids_given.again[exc.job_id]
            where = f"line {again}: job id {exc.job_id!r} is also on line {first}"
        elif exc.job_id in ids_given.first:
            where = f"line {ids_given.first[exc.job_id]}: {exc}"
        else:  # one of the ids made for this enqueue: another bulk enqueue drew the same block
            where = f"{exc} (an id made for this enqueue; running it again draws new ones)"
        raise Conflict(f"{where}; nothing was enqueued") from None
    except UniqueKeyTaken as exc:  # found in a batch: the line is the one that gave the key
        key = exc.key
        if key in keys_given.again:
            where = f"line {keys_given.again[key]}: unique key {key!r} is also line {keys_given.first[key]}'s"
        elif key in keys_given.first:
            where = f"line {keys_given.first[key]}: {exc}"
        else:
            where = str(exc)
        raise Conflict(f"{where}; nothing was enqueued") from None
    except (InvalidInput, NotFound, Conflict) as exc:
        if str(exc).startswith("line "):
            raise  # a line that did not parse: it says so already
        # a parent refused: the job being inserted is the one that names it
        raise type(exc)(f"line {current[0]}: {exc}; nothing was enqueued") from None


class _Lines:
    """Where a file gave each value: the line it first came on, and the first line repeating it."""

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.again: dict[str, int] = {}

    def note(self, value: str, number: int) -> None:
        if value in self.first:
            self.again.setdefault(value, number)
        else:
            self.first[value] = number


def bounded_lines(stream: IO[str], limit: int = MAX_LINE_BYTES) -> Iterator[str]:
    """The lines of ``stream``, refusing one as soon as it passes ``limit`` characters (a file
    with no newline at all, such as /dev/zero, is refused after reading ``limit``, not all of it)."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) > limit:
            raise InvalidInput(f"line {number} is over {limit // 1024} KiB; nothing was enqueued")
        yield line


def enqueue_stream(
    store: Store,
    stream: IO[str],
    overrides: dict[str, Any],
    progress: Callable[[int], None] | None = None,
    ids: Callable[[str], object] | None = None,
    batch: str | None = None,
) -> int:
    """:func:`enqueue_lines` from an open text file, each line bounded."""
    return enqueue_lines(store, bounded_lines(stream), overrides, progress, ids, batch)


def get_job(store: Store, job_id: str) -> Job:
    job = store.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}; see queuectl list")
    return job


def find_job(store: Store, job_id: str) -> Job | None:
    """The job, or None if there is none (any more) by that id."""
    return store.get(job_id)


@dataclass
class JobPage:
    """The jobs shown, newest first, and how many matched in all (for "50 of 1,234 shown")."""

    jobs: list[Job]
    matched: int
    counted: bool = True  # False: ``matched`` was not counted (it is just ``len(jobs)``)


def list_jobs(
    store: Store,
    states: list[str] | str | None = None,
    queue: str | None = None,
    limit: int = 50,
    before: float | None = None,
    count: bool = True,
    batch: str | None = None,
    labels: list[str] | None = None,
) -> JobPage:
    """Jobs newest first, in any of ``states`` (none: every state) and one queue, created before
    ``before`` when given (the cursor of the next page: the last job's ``created_at``).
    ``count=False`` skips counting the matches (the per-queue counters: a read of a few rows).

    Each state is one indexed query of at most ``limit`` rows, merged by creation time. When the
    limit was reached (or on a later page), the count of all matches comes from the per-queue
    totals (an indexed aggregate), never from reading the jobs.
    """
    wanted = [states] if isinstance(states, str) else list(dict.fromkeys(states or []))
    labels = label_filters(labels)
    for state in wanted:
        check_state(state)
    if len(wanted) <= 1:
        jobs = store.list_jobs(
            state=wanted[0] if wanted else None, queue=queue, limit=limit, before=before, batch=batch, labels=labels
        )
    else:
        merged = [
            job
            for state in wanted
            for job in store.list_jobs(state=state, queue=queue, limit=limit, before=before, batch=batch, labels=labels)
        ]
        jobs = sorted(merged, key=lambda job: job.created_at, reverse=True)[:limit]
    if not count:
        return JobPage(jobs, len(jobs), counted=False)
    if (len(jobs) < limit and before is None) or batch is not None or labels:  # no indexed count of these: "at least"
        return JobPage(jobs, len(jobs))  # every match is shown: no need to count them
    counts = store.counts()
    matched = sum(
        number
        for name, per_state in counts.items()
        if queue is None or name == queue
        for state, number in per_state.items()
        if not wanted or state in wanted
    )
    return JobPage(jobs, max(matched, len(jobs)))


def cancel(store: Store, job_id: str) -> Job:
    """Cancel a job: a waiting one never runs; a running one is killed at once (MongoDB: within a heartbeat)."""
    return lifecycle.cancel(store, job_id, store.now())


# --- retention ----------------------------------------------------------------------------------


def check_purgeable(states: list[str]) -> None:
    """InvalidInput unless every state is a finished one (only those can be purged)."""
    for state in states:
        check_state(state)
        if state not in FINISHED:
            raise InvalidInput(f"cannot purge {state} jobs: only {', '.join(FINISHED)} jobs can be purged")


def purge(
    store: Store,
    states: list[str],
    older_than: float | None,
    now: float,
    dry_run: bool = False,
    max_batches: int | None = None,
    progress: Callable[[int], None] | None = None,
    pause: Callable[[float], None] = time.sleep,
) -> int:
    """Delete finished jobs by state and age, in batches (at most ``max_batches``); ``dry_run``
    counts. ``progress`` is told how many were deleted so far, after each batch.

    Between two batches the write lock stays free as long as the last batch held it (at most
    PURGE_YIELD_S): taken again at once, it left other writers (workers' heartbeats, claims),
    who ask again every 1-20 ms while they wait (every 1-100 ms with SQLite's own handler),
    hardly a moment to get in."""
    check_purgeable(states)
    before = None if older_than is None else now - older_than
    if dry_run:
        return store.count_purgeable(states, before)
    total = 0
    batches = 0
    took = 0.0
    while max_batches is None or batches < max_batches:
        if batches:
            pause(min(PURGE_YIELD_S, max(took, 0.001)))
        started = time.monotonic()
        deleted = store.purge(states, before, limit=RETENTION_BATCH)
        took = time.monotonic() - started
        total += deleted
        batches += 1
        if progress is not None:
            progress(total)
        if deleted < RETENTION_BATCH:
            break
    return total


def apply_retention(store: Store, config: RuntimeConfig, now: float, max_batches: int | None = None) -> int:
    """The automatic purge the housekeeper runs now and then, per the retain-* config keys (a
    job's history goes with it; the event log has its own: :func:`queuectl.service.events.apply_retention`)."""
    deleted = 0
    if config.retain_completed > 0:
        deleted += purge(store, [COMPLETED], config.retain_completed, now, max_batches=max_batches)
    if config.retain_dead > 0:
        deleted += purge(store, [DEAD, CANCELLED], config.retain_dead, now, max_batches=max_batches)
    return deleted


# --- waiting for jobs ---------------------------------------------------------------------------


@dataclass
class WaitResult:
    jobs: list[Job]
    timed_out: bool


def wait_for(
    store: Store,
    job_ids: list[str],
    timeout: float | None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> WaitResult:
    """Block until every job is finished (or the timeout passes), polling with a growing interval."""
    for job_id in job_ids:
        get_job(store, job_id)  # unknown ids fail at once
    deadline = None if timeout is None else clock() + timeout
    interval = 0.05
    while True:
        jobs = [get_job(store, job_id) for job_id in job_ids]
        if all(job.state in FINISHED for job in jobs):
            return WaitResult(jobs, False)
        if deadline is not None and clock() >= deadline:
            return WaitResult(jobs, True)
        pause = interval if deadline is None else min(interval, max(0.0, deadline - clock()))
        sleep(pause)
        interval = min(interval * 1.5, 1.0)
