"""The store contract: the only interface to a database. Its docstrings are the spec.

Every backend passes ``tests/store/test_contract.py``. A method changes the database in one
transaction or one atomic update, or not at all. Times are epoch seconds (floats) supplied by
the caller, so that the rules and the tests control the clock.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, Iterable, Protocol, TypeVar

from queuectl.core.models import Job, Lease, Outcome, Schedule, WorkerInfo

T = TypeVar("T")


def translating_errors(
    classify: Callable[[Any, Exception], Exception | None],
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A decorator for store methods: a driver exception that ``classify(store, exc)`` maps to a
    queuectl error is raised as that error (one clear line for the user); others pass through."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                mapped = classify(self, exc)
                if mapped is None:
                    raise
                raise mapped from exc

        return wrapper

    return decorate


class Waker(Protocol):
    """A file descriptor that becomes readable when new work may be there."""

    def fileno(self) -> int: ...

    def drain(self) -> bytes: ...

    def close(self) -> None: ...


class Store(abc.ABC):
    """A queue database. Open one with :func:`queuectl.store.open_store`."""

    url: str

    # --- jobs: writing ----------------------------------------------------------------------

    @abc.abstractmethod
    def enqueue_many(self, jobs: Iterable[Job]) -> int:
        """Insert every job or none (all-or-nothing even if the iterable raises midway).

        Raises Conflict naming the first id that already exists. Returns how many were inserted.
        Wakes idle workers once, after the commit.
        """

    def enqueue(self, job: Job) -> None:
        """Insert one job; Conflict if its id exists."""
        self.enqueue_many([job])

    @abc.abstractmethod
    def claim(
        self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1
    ) -> list[Job]:
        """Atomically take up to ``limit`` eligible jobs for ``worker_id``.

        Eligible: state pending or failed, ``run_at <= now``, queue in ``queues`` (None: any) and
        not paused. Order: the order of ``queues``, then priority (higher first), then enqueue
        time. Each claimed job becomes processing, ``locked_by=worker_id``,
        ``lease_expires_at=now+lease``, ``attempts+1`` (the new attempt is the lease token),
        ``started_at=now``. No job is ever returned to two callers for the same attempt.
        """

    def finish_and_claim(
        self, outcomes: list[tuple[Lease, Outcome]], worker_id: str, queues: list[str] | None,
        now: float, lease: float, limit: int,
    ) -> tuple[list[bool], list[Job]]:
        """:meth:`finish` each outcome, then :meth:`claim` up to ``limit`` jobs.

        The busy worker's round trip: backends that can do it in one transaction override this.
        Returns whether each outcome was written, and the claimed jobs.
        """
        written = [self.finish(held, outcome) for held, outcome in outcomes]
        return written, self.claim(worker_id, queues, now, lease, limit) if limit > 0 else []

    @abc.abstractmethod
    def heartbeat(
        self, worker_id: str, beats: list[tuple[Lease, str | None]], now: float, lease: float
    ) -> set[str]:
        """Extend the lease of each held job (and save its output so far, when given).

        Fenced: only a job still processing under the same worker and attempt is touched.
        Returns the ids whose lease is gone (recovered, cancelled, taken over): their runs must
        be stopped and nothing more written for them.
        """

    @abc.abstractmethod
    def finish(self, lease: Lease, outcome: Outcome, expired_before: float | None = None) -> bool:
        """Record the end of an attempt, fenced on the lease (id, worker, attempt, processing).

        With ``expired_before``, also require ``lease_expires_at <= expired_before`` (used when
        recovering another worker's job). Sets ``locked_by`` and the lease to null. Returns
        False, writing nothing, when the lease no longer holds.
        """

    @abc.abstractmethod
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease ended before ``now`` (their worker is presumed dead)."""

    @abc.abstractmethod
    def cancel(self, job_id: str, now: float) -> Job:
        """Move a pending, failed or processing job to cancelled and return it.

        A processing job's worker sees its lease gone at the next heartbeat and kills the run.
        NotFound for an unknown id; Conflict for a job that already finished.
        """

    @abc.abstractmethod
    def retry_dead(self, job_id: str | None, now: float) -> int:
        """Move one dead job (or, with None, all of them) back to pending with attempts reset.

        Atomic per job: of many concurrent retries of one job exactly one returns 1.
        NotFound for an unknown id; Conflict if that job is not dead.
        """

    @abc.abstractmethod
    def purge(self, states: list[str], finished_before: float | None = None, limit: int | None = None) -> int:
        """Delete up to ``limit`` jobs in ``states`` finished before the given time; returns the count.

        Callers purging many jobs pass a limit and repeat, so no transaction holds the lock long.
        """

    @abc.abstractmethod
    def count_purgeable(self, states: list[str], finished_before: float | None = None) -> int:
        """How many jobs :meth:`purge` would delete (for ``--dry-run``)."""

    @abc.abstractmethod
    def claim_hook(self, now: float) -> Job | None:
        """Take one job whose on-finish hook is due (it then runs at most once) and return it."""

    @abc.abstractmethod
    def finish_hook(self, job_id: str, error: str | None, now: float) -> None:
        """Record a hook's result: done, or failed with ``error``. Never changes the job's state."""

    # --- jobs: reading ----------------------------------------------------------------------

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job with that id, or None."""

    @abc.abstractmethod
    def list_jobs(
        self, state: str | None = None, queue: str | None = None, limit: int = 50
    ) -> list[Job]:
        """Jobs newest first, filtered by state and queue; served by an index, never a full scan."""

    @abc.abstractmethod
    def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}`` for every queue with at least one job."""

    @abc.abstractmethod
    def throughput(self, since: float, bucket: float = 60.0) -> dict[str, dict[int, int]]:
        """Attempts that ended since ``since``, per state and time bucket.

        ``{"completed": {b: n}, "failed": {b: n}}`` where ``b = int(time // bucket)``: completed
        jobs by ``finished_at``; failed and dead jobs by their last update (a job counts once,
        for its latest failure). Served by indexes on (state, time).
        """

    @abc.abstractmethod
    def recent_failures(self, limit: int = 5) -> list[Job]:
        """Failed and dead jobs, the most recently updated first."""

    @abc.abstractmethod
    def duration_totals(self) -> tuple[int, float]:
        """``(count, sum of durations)`` of the completed jobs, for a metrics summary."""

    @abc.abstractmethod
    def next_due(self, queues: list[str] | None) -> float | None:
        """The earliest ``run_at`` of a pending or failed job in ``queues``, or None."""

    # --- cron schedules ---------------------------------------------------------------------

    @abc.abstractmethod
    def add_schedule(self, schedule: Schedule) -> None:
        """Create a schedule; Conflict if the name is taken."""

    @abc.abstractmethod
    def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""

    @abc.abstractmethod
    def remove_schedule(self, name: str) -> None:
        """Delete a schedule (its jobs stay); NotFound if there is none by that name."""

    @abc.abstractmethod
    def set_schedule_paused(self, name: str, paused: bool, next_fire_at: float | None = None) -> None:
        """Pause or resume a schedule (resuming sets its next fire time); NotFound if unknown."""

    @abc.abstractmethod
    def due_schedules(self, now: float) -> list[Schedule]:
        """Unpaused schedules whose next fire time has come."""

    @abc.abstractmethod
    def fire_schedule(self, name: str, slot: float, next_fire_at: float, job: Job) -> bool:
        """Claim the fire slot ``slot`` (the schedule's current next_fire_at) and enqueue ``job``.

        Atomic: of any number of workers firing the same slot, exactly one moves the schedule
        on to ``next_fire_at`` and enqueues the job; the others get False and change nothing.
        """

    # --- queues, config, workers ------------------------------------------------------------

    @abc.abstractmethod
    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (no new claims from that queue, on any worker) or resume a queue."""

    @abc.abstractmethod
    def paused_queues(self) -> set[str]:
        """The names of the paused queues."""

    @abc.abstractmethod
    def config_values(self) -> dict[str, str]:
        """Every runtime key set in the database, as stored strings."""

    @abc.abstractmethod
    def set_config(self, key: str, value: str) -> None:
        """Store one runtime key (validated by the caller)."""

    @abc.abstractmethod
    def register_worker(self, info: WorkerInfo) -> None:
        """Add (or replace) a worker in the registry."""

    @abc.abstractmethod
    def beat_worker(self, worker_id: str, now: float, state: str, current_jobs: list[str]) -> bool:
        """Record a worker's heartbeat and current jobs; returns True if it was asked to stop."""

    @abc.abstractmethod
    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker, newest first."""

    @abc.abstractmethod
    def request_stop(self, worker_ids: list[str] | None = None) -> int:
        """Ask running workers (all, or the given ones) to stop gracefully; returns how many."""

    @abc.abstractmethod
    def prune_workers(self, seen_before: float) -> int:
        """Forget workers that stopped or have not beaten since ``seen_before``."""

    def resettle_waiting(self, limit: int = 1000) -> None:
        """Release or cancel waiting jobs whose parents finished without settling them.

        A backend that settles dependants in the same transaction as the parent's outcome never
        needs this (SQLite); one that takes several steps (MongoDB) repairs here what a worker
        dying between those steps left behind. Workers call it now and then.
        """

    # --- waking idle workers ----------------------------------------------------------------

    def waker(self, worker_id: str) -> Waker | None:
        """A descriptor that turns readable when work may have arrived; None means poll."""
        return None

    def notify(self, stop: bool = False) -> None:
        """Wake idle workers now (after changes that make jobs eligible; ``stop``: check for a stop)."""

    def close(self) -> None:
        """Release the connection."""
