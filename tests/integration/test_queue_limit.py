"""``queue limit`` (issue 15) with real worker processes: a limit of 2 never has 3 running at once,
across two worker processes with three slots each, checked with the ledger the jobs write."""

from __future__ import annotations

import pytest

from .conftest import Queue, wait_until
from .ledger import ledger_command, read_ledger

JOBS = 10


def most_at_once(ledger: str) -> int:
    """The largest number of runs whose [start, end] overlap, from the ledger's times."""
    events = []
    for runs in read_ledger(ledger).values():
        for run in runs.values():
            assert run.start is not None and run.end is not None, str(run)
            events += [(run.start, 1), (run.end, -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):  # an end before a start at a tie
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("backend", ["queue", "pg_queue"])
def test_a_queue_limit_of_two_never_has_three_running_across_two_workers(
    backend: str, request: pytest.FixtureRequest
) -> None:
    q: Queue = request.getfixturevalue(backend)
    q.cli("queue", "limit", "builds", "2")
    ledger = str(q.root / "ledger")
    specs = [
        {"id": f"b{n}", "command": ledger_command(ledger, f"b{n}", "sleep 0.3"), "queue": "builds"} for n in range(JOBS)
    ]
    specs += [{"id": f"f{n}", "command": "sleep 0.3"} for n in range(4)]  # an unlimited queue beside it
    assert q.enqueue_file(specs) == JOBS + 4
    q.start_workers("--concurrency", "3", count=2)
    wait_until(lambda: q.counts().get("completed", 0) == JOBS + 4, 90, message=lambda: f"{q.counts()}\n{q.logs()}")
    assert most_at_once(ledger) == 2  # the limit was used, and never passed
    q.cli("queue", "limit", "builds", "none")
