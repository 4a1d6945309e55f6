"""``queue rate`` (issue 15) with real worker processes: a rate of 5/s over 15 jobs never starts
more than 5 in any one-second window, across two worker processes with three slots each, and the
held-back jobs start as soon as the window has room (the workers sleep until then, not a poll
interval). The claim times come from the event log, the run times from the ledger the jobs write."""

from __future__ import annotations

import json

import pytest

from .conftest import Queue, wait_until
from .ledger import ledger_command, read_ledger

JOBS = 15
RATE, WINDOW = 5, 1.0


def most_in_a_window(times: list[float], window: float) -> int:
    """The largest number of ``times`` inside any half-open window ``[t, t + window)``."""
    times = sorted(times)
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + window))
    return best


@pytest.mark.parametrize("backend", ["queue", "pg_queue"])
def test_a_rate_of_five_a_second_never_starts_six_in_a_second(backend: str, request: pytest.FixtureRequest) -> None:
    q: Queue = request.getfixturevalue(backend)
    q.cli("config", "set", "poll-interval", "10")  # so only the rate's own wake-up can be in time
    assert q.cli("queue", "rate", "api", f"{RATE}/s").stdout == f"api: at most {RATE}/s started\n"
    ledger = str(q.root / "ledger")
    specs = [{"id": f"a{n}", "command": ledger_command(ledger, f"a{n}", "true"), "queue": "api"} for n in range(JOBS)]
    specs += [{"id": f"f{n}", "command": "true"} for n in range(5)]  # a queue without a rate beside it
    assert q.enqueue_file(specs) == JOBS + 5
    q.start_workers("--concurrency", "3", count=2)
    wait_until(lambda: q.counts().get("completed", 0) == JOBS + 5, 90, message=lambda: f"{q.counts()}\n{q.logs()}")
    events = [
        json.loads(line) for line in q.cli("events", "--json", "--queue", "api", "--limit", "1000").stdout.split()
    ]
    claims = sorted(event["at"] for event in events if event["kind"] == "claimed")
    assert len(claims) == JOBS
    assert most_in_a_window(claims, WINDOW) == RATE  # the rate was used, and never passed
    # three windows' worth: the last five start once the second window ends, without a poll's delay
    assert 2 * WINDOW <= claims[-1] - claims[0] < 2 * WINDOW + 0.8, claims
    starts = sorted(run.start for runs in read_ledger(ledger).values() for run in runs.values() if run.start)
    assert len(starts) == JOBS
    shown = q.cli_json("queue", "list")
    assert {row["name"]: row.get("rate") for row in shown} == {"api": f"{RATE}/s", "default": None}
    q.cli("queue", "rate", "api", "none")
