"""Finding 1: a multi-slot claim that fails on its 2nd call must not orphan the 1st, and a claim
whose reply is lost (even when looking it up fails too) is adopted by the worker, not left to
expire and count as a failed attempt (a job on its last attempt would go to the DLQ unrun)."""

from __future__ import annotations

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreUnavailable

from .world import LEASE, T, World, job


def three_jobs(w: World) -> None:
    lifecycle.enqueue(w.store, [job(f"j{i}", created_at=T - 10 + i, max_retries=0) for i in range(3)])


def claim_calls(w: World) -> list[int]:
    """The call numbers (from now) of the next claim's find_one_and_update calls, by a dry run."""
    probe = World()
    three_jobs(probe)
    start = probe.faults.calls
    probe.claim(3)
    return [
        n - start for n, where in enumerate(probe.faults.log, 1) if n > start and where == "jobs.find_one_and_update"
    ]


def test_a_claim_failing_on_its_second_job_keeps_the_first() -> None:
    w = World()
    three_jobs(w)
    second = claim_calls(w)[1]
    w.faults.arm(second, "before")

    w.claim(3)  # no error: the jobs claimed so far are returned, each kept the moment it came

    assert list(w.held) == ["j0"]
    w.claim(2)
    assert sorted(w.held) == ["j0", "j1", "j2"]


def test_a_claim_whose_reply_and_lookup_are_both_lost_is_adopted_at_the_next_claim() -> None:
    w = World()
    three_jobs(w)
    first = claim_calls(w)[0]
    w.faults.arm(first, "after")  # applied, reply lost
    w.faults.arm(first + 1, "before")  # and the lookup by its token fails too

    with pytest.raises(StoreUnavailable):
        w.claim(1)
    assert w.state("j0") == "processing" and not w.held  # the worker does not know it holds j0

    w.claim(1, now=T + 5)  # the next claim adopts it first, with a fresh lease

    assert list(w.held) == ["j0"]
    doc = w.store._jobs._collection.find_one({"_id": "j0"})
    assert doc["attempts"] == 1 and doc["lease_expires_at"] == T + 5 + LEASE
    w.complete_all(T + 6)
    assert w.state("j0") == "completed"
