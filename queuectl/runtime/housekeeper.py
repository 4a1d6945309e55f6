"""The cluster's chores, apart from the worker's claim loop: each on its own cadence.

Any worker process may do them, and each is safe to race with the other workers doing the
same: fire due cron schedules, run due on-finish hooks (one at a time, in a thread), recover
the jobs of workers presumed dead (expired leases), apply retention (jobs and the event log),
finish or remove bulk enqueues their writer left behind (lifecycle.batches), and on a store without
transactions resettle jobs left waiting for parents that already ended.

The clock and the hook runner are injected, so the cadence is tested without processes.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from queuectl.core import lifecycle
from queuectl.core.config import RuntimeConfig
from queuectl.core.defaults import CHORE_CHECK_S as CHECK_EVERY_S
from queuectl.core.defaults import FIRST_RETENTION_S, RETENTION_EVERY_S
from queuectl.core.errors import QueuectlError, StoreCorrupt
from queuectl.core.models import Job
from queuectl.runtime import hooks
from queuectl.service import events, jobs, schedules
from queuectl.store import Store

T = TypeVar("T")


class Housekeeper:
    """Chores with their timers. Call :meth:`tick` from the worker's loop; it raises no store
    error but corruption (a chore that fails is skipped and tried again on its next turn)."""

    def __init__(
        self,
        store: Store,
        config: Callable[[], RuntimeConfig],
        base_env: dict[str, str],
        log: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] | None = None,  # default: the store's clock
        run_hook: Callable[[Job, RuntimeConfig, dict[str, str]], str | None] = hooks.run_hook,
    ) -> None:
        self.store = store
        self.config = config
        self.base_env = base_env
        self.log = log
        self.clock = clock
        self.wall = wall or store.now
        self.run_hook = run_hook
        start = clock()
        self.next_schedule_check = start
        self.next_hook_check = start
        self.next_recovery = start
        self.next_retention = start + FIRST_RETENTION_S
        self.resettle_from: float | None = None
        self.hook_thread: threading.Thread | None = None
        self.hook_results: list[tuple[str, str | None]] = []

    def tick(self, stopping: bool) -> bool:
        """Do the chores that are due; returns True when jobs may have become claimable. Each
        chore fails on its own: an error in one (logged) never skips the others."""
        mono = self.clock()
        config = self.config()
        woke = False
        self._chore(self._write_hook_results)
        if mono >= self.next_recovery:  # a stopping worker still watches for dead ones
            self.next_recovery = mono + config.heartbeat
            woke = bool(self._chore(lambda: lifecycle.recover_expired(self.store, config, self.wall()))) or woke
            # without transactions: resume the follow-ups a crash between steps left
            woke = bool(self._chore(lambda: lifecycle.repair(self.store, self.wall()))) or woke
        if stopping:
            return woke  # otherwise, a stopping worker only finishes what it started
        if mono >= self.next_schedule_check:
            self.next_schedule_check = mono + min(CHECK_EVERY_S, config.poll_interval)
            woke = bool(self._chore(lambda: schedules.fire_due_schedules(self.store, self.wall()))) or woke
        if mono >= self.next_hook_check and not self._hook_running():
            self.next_hook_check = mono + min(CHECK_EVERY_S, config.poll_interval)
            self._chore(lambda: self._start_hook(config))
        if mono >= self.next_retention:
            # one batch per pass, so heartbeats go on; a full batch means more: come back soon
            deleted = self._chore(lambda: jobs.apply_retention(self.store, config, self.wall(), max_batches=1))
            full = isinstance(deleted, int) and deleted >= jobs.RETENTION_BATCH
            logged = self._chore(lambda: events.apply_retention(self.store, config, self.wall(), max_batches=1))
            full = full or (isinstance(logged, int) and logged >= jobs.RETENTION_BATCH)
            swept = self._chore(lambda: lifecycle.sweep_batches(self.store, self.wall()))
            if self.store.transactional:  # PostgreSQL: fold the counters' delta rows (store/sql/counters.py)
                self._chore(lambda: self.store.repair(self.wall()))
            self.next_retention = mono + (1.0 if full or swept else RETENTION_EVERY_S)
            if not self.store.transactional:
                self._chore(self._resettle)
        return woke

    def _chore(self, chore: Callable[[], T]) -> T | None:
        try:
            return chore()
        except StoreCorrupt:
            raise  # fatal for the worker (exit 7), not a chore to try again
        except QueuectlError as exc:
            self.log(f"housekeeping skipped: {exc}")
            return None

    def _resettle(self) -> None:
        self.resettle_from = lifecycle.resettle_waiting(self.store, self.wall(), self.resettle_from)

    def next_moment(self, stopping: bool) -> float:
        """The monotonic time :meth:`tick` has something to do next."""
        if stopping:
            hook_wait = self.clock() + 0.1 if self.busy() else float("inf")  # a stop waits for the hook
            return min(self.next_recovery, hook_wait)
        return min(self.next_schedule_check, self.next_recovery)

    def busy(self) -> bool:
        """A hook is running or its result is not written yet (a stop waits for both)."""
        return bool(self.hook_results) or self._hook_running()

    def _hook_running(self) -> bool:
        return self.hook_thread is not None and self.hook_thread.is_alive()

    def _write_hook_results(self) -> None:
        while self.hook_results:
            job_id, error = self.hook_results[-1]
            lifecycle.finish_hook(self.store, job_id, error, self.wall())
            self.hook_results.pop()  # only once written

    def _start_hook(self, config: RuntimeConfig) -> None:
        job = lifecycle.claim_hook(self.store, self.wall())
        if job is not None:
            self.hook_thread = threading.Thread(target=self._run, args=(job, config), daemon=True)
            self.hook_thread.start()

    def _run(self, job: Job, config: RuntimeConfig) -> None:
        error = self.run_hook(job, config, self.base_env)
        if error:
            self.log(f"on-finish hook of job {job.id} failed: {error}")
        self.hook_results.append((job.id, error))
