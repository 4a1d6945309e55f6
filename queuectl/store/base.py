"""The store contract: the only interface to a database. Its docstrings are the spec.

Every backend passes ``tests/store/test_contract.py``. Each primitive states what is atomic on
each backend. Times are epoch seconds (floats) supplied by the caller, so that the rules and the
tests control the clock.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import time
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Protocol, Sequence, TypeVar

from queuectl.core.errors import DuplicateJobId, UniqueKeyTaken  # noqa: F401  (named in the docstrings)
from queuectl.core.models import Attempt, Event, Job, Lease

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
    """A queue database: primitives only. Open one with :func:`queuectl.store.open_store`.

    The rules (what a cancel, an outcome or a DLQ retry means) live in
    :mod:`queuectl.core.lifecycle`, which composes these primitives. A store translates them into
    SQL or MongoDB and keeps its storage techniques to itself (partial indexes, a due flag, staged
    bulk inserts, the index field behind unique keys).

    Atomicity: on a store with ``transactional = True`` (SQL) everything between entering and
    leaving :meth:`unit` commits together or not at all. On MongoDB a unit groups nothing: each
    primitive is on its own one atomic single-document update (or one all-or-nothing insert).
    """

    url: str
    transactional: bool = False  # True: a unit of work is one transaction
    # bytes one job's record may spend on output (its own and its kept attempts'); None: no cap
    output_budget: int | None = None

    def unit(self) -> AbstractContextManager[None]:
        """A unit of work: the primitives called inside it commit together (SQL: one
        ``BEGIN IMMEDIATE`` transaction, taking the write lock up front) or roll back together
        on an exception. Nested units join the outermost one. Default: no grouping."""
        return contextlib.nullcontext()

    # --- jobs: writing ----------------------------------------------------------------------

    @abc.abstractmethod
    def insert_jobs(self, jobs: Iterable[Job]) -> int:
        """Insert every job or none (all-or-nothing even if the iterable raises midway).

        :param jobs: jobs with their state decided (the iterable may read the store meanwhile).
        :return: how many were inserted.
        Raises :class:`DuplicateJobId` naming the first id that exists, :class:`UniqueKeyTaken`
        when a job's ``unique_key`` is held by a job in a ``KEY_HOLDING`` state. Jobs are not
        claimable before the whole batch is in. Does not wake workers. Each job's ``enqueued``
        event (:func:`queuectl.core.lifecycle.events.enqueued`) is logged at the commit point:
        in the insert's transaction (SQL), in the job's document (MongoDB: published when the
        job becomes visible, never for a batch that is not committed).
        """

    def insert_job(self, job: Job) -> None:
        """Insert one job (see :meth:`insert_jobs`)."""
        self.insert_jobs([job])

    @abc.abstractmethod
    def claim(self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1) -> list[Job]:
        """Atomically take up to ``limit`` eligible jobs for ``worker_id``.

        Eligible: state in ``CLAIMABLE``, ``run_at <= now``, queue in ``queues`` (None: any)
        and not paused. Order: the order of ``queues``, then priority (higher first), then
        enqueue time. Each claimed job becomes processing, ``locked_by=worker_id``,
        ``lease_expires_at=now+lease``, ``attempts+1`` (the new attempt is the lease token),
        ``started_at=now``. No job is ever returned to two callers for the same attempt.
        Atomic per job on every backend, and each claim logs its ``claimed`` event in that
        same atomic write (:func:`queuectl.core.lifecycle.events.claimed`).
        """

    @abc.abstractmethod
    def update_job(
        self,
        job_id: str,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...] | None = None,
        lease: Lease | None = None,
        expired_before: float | None = None,
        hook_state: str | None = None,
        attempt: Attempt | None = None,
        keep_outputs: int = 10,
        events: Sequence[Event] = (),
    ) -> bool:
        """The guarded update: write ``changes`` to the job if every guard given still holds.

        :param changes: Job field -> new value (not ``env`` or ``after``, which never change);
            ``hook_state`` may be a :class:`~queuectl.core.lifecycle.WhenHooked`, written only
            if the job has an on-finish hook. A change of ``state`` or
            ``run_at`` comes with ``updated_at``; the store keeps its own index fields (due
            flag, unique-key holding) in step in the same atomic write.
        :param states: the job's state must be one of these.
        :param lease: the fence: processing, ``locked_by`` and ``attempts`` as in the lease.
        :param expired_before: the lease must have ended by then (``lease_expires_at <= it``).
        :param hook_state: the job's hook state must be this.
        :param attempt: an attempt's end: its row is added to the job's history (numbered
            next), and only the latest ``keep_outputs`` rows keep their output.
        :param events: logged with the change (an event without a queue gets the job's).
        :return: True if the job was written; False (nothing written, no row, no event) if a
            guard failed or there is no such job. One atomic single-row / single-document
            write: on SQL the history row and the events are in its transaction; on MongoDB
            they are in the same document update (the events as an outbox, published into
            the log right after and by any worker's repair pass, each exactly once).
        Raises :class:`UniqueKeyTaken` if the job would hold a key another job holds.
        """

    @abc.abstractmethod
    def update_jobs(
        self,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...],
        event: Event | None = None,
        batch: str | None = None,
        parentless: bool = False,
        limit: int | None = None,
    ) -> int:
        """The guarded update of every job in ``states`` (see :meth:`update_job`): of ``batch``
        when given (:attr:`Job.batch`), naming no parent if ``parentless``, at most ``limit`` of
        them (publishing a staged bulk enqueue, :mod:`queuectl.core.lifecycle.batches`); returns
        how many were written. ``event``: logged once per job written, with its id and queue.
        SQL: one statement. MongoDB: atomic per job, not as a whole.
        Raises :class:`UniqueKeyTaken` if a job would hold a key another job holds (SQL: and
        then nothing is written)."""

    @abc.abstractmethod
    def purge(
        self,
        states: list[str],
        finished_before: float | None = None,
        limit: int | None = None,
        batch: str | None = None,
        job_id: str | None = None,
    ) -> int:
        """Delete up to ``limit`` jobs in ``states`` finished before the given time (of ``batch``,
        or just the job ``job_id``, when given); returns the count, and the deleted jobs' dependency edges go with them.

        Callers purging many jobs pass a limit and repeat, so no transaction holds the lock long.
        """

    @abc.abstractmethod
    def purge_events(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` of the oldest events logged before ``before``; returns the count.
        A job's history goes with the job (:meth:`purge`), not here."""

    @abc.abstractmethod
    def count_purgeable(self, states: list[str], finished_before: float | None = None) -> int:
        """How many jobs :meth:`purge` would delete (for ``--dry-run``)."""

    # --- jobs: reading ----------------------------------------------------------------------

    @abc.abstractmethod
    def get(self, job_id: str, staged: bool = False) -> Job | None:
        """The job with that id, or None (jobs of a bulk insert still in progress are not visible,
        nor, unless ``staged``, the staged jobs of a batch not published yet)."""

    @abc.abstractmethod
    def list_jobs(
        self,
        state: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before: float | None = None,
        batch: str | None = None,
        labels: list[str] | None = None,
    ) -> list[Job]:
        """Jobs newest first, filtered by state, queue, batch and labels (``"k=v"`` strings, every
        one of them on the job), created before ``before`` when
        given (the cursor of the next page); served by an index, never a full scan. Staged jobs
        only when ``state`` is ``staged``."""

    @abc.abstractmethod
    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        """``{id: state}`` of those jobs that exist, including the jobs already taken from the
        iterable of an :meth:`insert_jobs` in progress (so a job may name a parent earlier in
        its own batch) and those inserted in the open unit of work."""

    @abc.abstractmethod
    def waiting_children(self, parent_id: str, any_state: bool = False, limit: int | None = None) -> list[Job]:
        """The waiting jobs that name ``parent_id`` in ``after`` or ``on_failure_of``; with
        ``any_state``, its dependants in every state (``show``, ``tree``), oldest first, at most
        ``limit`` of them; served by an index either way."""

    @abc.abstractmethod
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        """Processing jobs whose lease ended before ``now`` (their worker is presumed dead)."""

    @abc.abstractmethod
    def hooks_due(self, limit: int = 1) -> list[Job]:
        """Jobs whose on-finish hook is due, the longest-waiting first."""

    @abc.abstractmethod
    def attempts(self, job_id: str) -> list[Attempt]:
        """The job's history: every attempt that ended, oldest first (numbered from 1); [] for
        an unknown job. The attempt running now is the job's own fields (``locked_by``...)."""

    # --- the event log --------------------------------------------------------------------------

    @abc.abstractmethod
    def read_events(
        self,
        after: int = 0,
        limit: int = 1000,
        job_id: str | None = None,
        queue: str | None = None,
        since: float | None = None,
        newest: bool = False,
    ) -> list[Event]:
        """Logged events with ``seq > after`` (and ``at >= since``, of that job or queue), in
        ``seq`` order: the first ``limit``, or with ``newest`` the last ``limit``. Sequence
        numbers only grow (never reused after a purge). On SQLite they are assigned in commit
        order; elsewhere (MongoDB: at publishing) a number may become visible after a higher
        one, or never (a publisher that died): a reader waits a little at a gap (see
        :mod:`queuectl.service.events`). Served by indexes on seq, (job, seq), (queue, seq)."""

    # --- aggregates (indexed: the dashboard and metrics read these every refresh) ------------

    @abc.abstractmethod
    def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}`` for every queue with at least one job (staged ones not counted)."""

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
        """The earliest ``run_at`` of a claimable job in ``queues`` (None: any queue), or None."""

    # --- the registry: schedules, queues, config, workers -------------------------------------

    @abc.abstractmethod
    def registry_put(
        self, kind: str, key: str, record: dict[str, Any], replace: bool = True, events: Sequence[Event] = ()
    ) -> bool:
        """Store ``record`` under ``key`` in ``kind`` (one of :data:`REGISTRY_KINDS`).

        With ``replace`` the record is created or overwritten (fields not given take their
        defaults); without, an existing record is left alone. Returns True if written;
        ``events`` are logged if it was (SQL: same transaction; MongoDB: right after).
        """

    @abc.abstractmethod
    def registry_list(self, kind: str, key: str | None = None) -> list[dict[str, Any]]:
        """The records of ``kind`` (just the one under ``key``, when given), each with its key
        under the kind's key field (``name``, ``key`` or ``id``)."""

    @abc.abstractmethod
    def registry_update(
        self,
        kind: str,
        changes: dict[str, Any],
        key: str | None = None,
        expect: dict[str, Any] | None = None,
        events: Sequence[Event] = (),
    ) -> int:
        """Compare-and-set: write ``changes`` to the records (the one under ``key``, or all)
        whose fields equal ``expect`` (a tuple value: one of). Atomic per record; returns how
        many were written; ``events`` are logged if any was (as for :meth:`registry_put`)."""

    @abc.abstractmethod
    def registry_delete(self, kind: str, key: str, expect: dict[str, Any] | None = None) -> int:
        """Delete the record under ``key`` if its fields equal ``expect``; returns 0 or 1."""

    # --- the outbox and repairs (stores without transactions) ---------------------------------

    def now(self) -> float:
        """The queue's clock (epoch seconds): every host compares leases and due times by it.
        A server store answers with the server's time as this host best knows it (MongoDB: its
        ``localTime``; PostgreSQL: ``clock_timestamp()`` read with each ``BEGIN``). It reads no
        database. The primitives still take their times from the caller, so that the rules and
        the tests own the clock."""
        return time.time()

    def unsettled(self, before: float, limit: int = 100) -> list[tuple[str, str, float]]:
        """``(id, state, mark)`` of finished jobs whose dependants may still need settling,
        marked by their outcome's own write at ``mark <= before``. A transactional store
        settles in the outcome's transaction and has none."""
        return []

    def mark_settled(self, job_id: str, mark: float) -> None:
        """Clear the mark :meth:`unsettled` returned (only that one: a newer mark stays)."""

    def repair(self, now: float) -> int:
        """Finish or undo what a client that died mid-way left in the store's own bookkeeping
        (MongoDB: bulk inserts committed but not published, or abandoned; PostgreSQL: folds the
        counters' delta rows). Idempotent, safe to
        run from every worker at once; returns how many things it dealt with."""
        return 0

    # --- waking idle workers ----------------------------------------------------------------

    def waker(self, worker_id: str) -> Waker | None:
        """A descriptor that turns readable when work may have arrived; None means poll."""
        return None

    def next_slot(self) -> float | None:
        """After a claim that a queue's rate limit cut short: when that queue has room again
        (None: no rate held a claim back). Read from the claim's own work, never a query, so
        an idle worker sleeps until then instead of polling."""
        return None

    def notify(self, stop: bool = False) -> None:
        """Wake idle workers now (after changes that make jobs eligible); ``stop``: have every worker
        renew its leases and read its registry row now (a stop request, a cancelled running job)."""

    def close(self) -> None:
        """Release the connection."""


# kind -> the field that holds a record's key
REGISTRY_KINDS = {
    "schedules": "name",
    "queues": "name",
    "config": "key",
    "workers": "id",
    "batches": "id",
    "tokens": "id",
}
