"""The gap-aware follower of service/events.py, over a log whose numbers may appear out of order
(MongoDB's publishers, PostgreSQL's sequences), and the time-to-seq bisection."""

from __future__ import annotations

from typing import Any

import pytest

from queuectl.core.errors import InvalidInput
from queuectl.core.models import Event
from queuectl.service import events


class Log:
    """A stand-in store: just ``read_events`` over a list that tests change between reads."""

    def __init__(self, seqs: list[int], at: dict[int, float] | None = None) -> None:
        self.events = {seq: Event("x", (at or {}).get(seq, float(seq)), f"j{seq}", seq=seq) for seq in seqs}
        self.reads = 0

    def read_events(self, after: int = 0, limit: int = 1000, *args: Any, newest: bool = False, **_: Any) -> list[Event]:
        self.reads += 1
        found = [self.events[seq] for seq in sorted(self.events) if seq > after]
        return found[-limit:] if newest else found[:limit]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(log: Log, clock: Clock, after: int, steps: int, on_sleep: Any = None) -> list[int]:
    seen: list[int] = []
    left = [steps]

    def sleep(_: float) -> None:
        clock.now += 0.5
        left[0] -= 1
        if on_sleep:
            on_sleep(clock.now)

    for event in events.follow(log, after, keep_going=lambda: left[0] > 0, sleep=sleep, clock=clock, gap_wait=2.0):  # type: ignore[arg-type]
        seen.append(event.seq)
    return seen


def test_a_gap_that_fills_is_waited_for_so_nothing_is_out_of_order() -> None:
    log, clock = Log([1, 2, 4]), Clock()

    def fill(now: float) -> None:
        if now >= 1.0:
            log.events[3] = Event("x", 3.0, "j3", seq=3)

    assert run(log, clock, 0, 6, fill) == [1, 2, 3, 4]


def test_a_gap_that_never_fills_is_passed_after_the_wait() -> None:
    log, clock = Log([1, 2, 5, 6]), Clock()
    assert run(log, clock, 0, 10) == [1, 2, 5, 6]
    assert clock.now >= 2.0  # it did wait


def test_filters_never_hide_a_gap() -> None:
    log, clock = Log([1, 2, 3]), Clock()
    seen = []
    left = [3]

    def sleep(_: float) -> None:
        left[0] -= 1

    for event in events.follow(log, 0, job_id="j2", keep_going=lambda: left[0] > 0, sleep=sleep, clock=clock):  # type: ignore[arg-type]
        seen.append(event.seq)
    assert seen == [2]


def test_a_time_is_found_by_bisecting_seq() -> None:
    log = Log(list(range(1, 101)), {seq: 1000.0 + seq for seq in range(1, 101)})
    assert events.seq_before(log, 1050.0) == 49  # type: ignore[arg-type]
    assert events.seq_before(log, 0.0) == 0  # type: ignore[arg-type]
    assert events.seq_before(log, 5000.0) == 100  # type: ignore[arg-type]
    holes = Log([3, 7, 8, 20], {3: 1.0, 7: 2.0, 8: 3.0, 20: 4.0})
    assert events.seq_before(holes, 3.0) == 7  # type: ignore[arg-type]
    assert events.seq_before(Log([]), 3.0) == 0  # type: ignore[arg-type]


def test_since_is_a_seq_or_an_age() -> None:
    assert events.parse_since("42", 100.0) == events.Since(seq=42)
    assert events.parse_since("10m", 1000.0) == events.Since(at=400.0)
    assert events.parse_since(None, 0.0) is None
    with pytest.raises(InvalidInput, match="sequence number"):
        events.parse_since("yesterday", 0.0)
