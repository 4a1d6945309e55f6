"""The dead letter queue: the jobs that ran out of retries, listed, retried, purged."""

from __future__ import annotations

from typing import Callable

from queuectl.core import lifecycle
from queuectl.core.models import DEAD, Job
from queuectl.service.jobs import purge
from queuectl.store import Store


def list_dead(store: Store, limit: int = 50) -> list[Job]:
    return store.list_jobs(state=DEAD, limit=limit)


def retry(store: Store, job_id: str | None) -> int:
    """Put one dead job (None: every one) back to pending with attempts reset; returns how many."""
    return lifecycle.retry_dead(store, job_id, store.now())


def count_dead(store: Store) -> int:
    """How many jobs the DLQ holds."""
    return purge(store, [DEAD], None, store.now(), dry_run=True)


def purge_dead(store: Store, progress: Callable[[int], None] | None = None) -> int:
    """Delete every job in the DLQ (in batches; ``progress`` is told how many went so far)."""
    return purge(store, [DEAD], None, store.now(), progress=progress)
