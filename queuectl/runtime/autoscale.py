"""When ``worker start --count MIN..MAX`` adds or retires a worker: the rule, kept apart from the
supervisor's process handling so it can be read (and tested) on its own.

The rule, checked about once a second from two cheap reads (the store's indexed ``next_due`` of
the served queues, and the registry rows of our workers, by id):

- **grow** by one worker while the oldest due, unclaimed job of the served queues has waited at
  least ``lag`` seconds (a paused queue's backlog is not lag), up to ``MAX``;
- **shrink** by one worker, down to ``MIN``, when there is no such lag and a worker's registry
  row has shown no running job for ``idle`` seconds; it is *retired* (SIGUSR1): it claims
  nothing more and exits once its jobs are done, however long they take. Nothing is killed;
- one change at a time: after a grow or a shrink nothing changes for ``cooldown`` seconds, so a
  new worker has claimed before the lag is judged again.

A worker's idleness is what its row showed at each check: a worker that runs short jobs between
two checks may look idle, and be retired only while no job waits (so nobody waits for it).
A queue held back by its ``queue limit`` shows lag that more workers cannot cure; ``MAX`` bounds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHECK_EVERY_S = 1.0


@dataclass(frozen=True)
class ScalePolicy:
    """``--count MIN..MAX`` and its timings (seconds)."""

    minimum: int
    maximum: int
    lag: float = 5.0
    idle: float = 60.0
    cooldown: float = 10.0

    @property
    def label(self) -> str:
        return f"{self.minimum}..{self.maximum}"

    @property
    def check_every(self) -> float:
        """About once a second; more often when the timings are shorter (tests)."""
        return max(0.1, min(CHECK_EVERY_S, *(t / 2 for t in (self.cooldown, self.lag, self.idle) if t > 0)))


@dataclass
class Autoscaler:
    """Remembers since when each worker looked idle, and when the last change was made."""

    policy: ScalePolicy
    idle_since: dict[int, float] = field(default_factory=dict)  # worker pid -> monotonic time
    last_change: float = float("-inf")

    def changed(self, now: float) -> None:
        self.last_change = now

    def decide(self, now: float, busy: dict[int, bool], lag: float | None) -> str | int | None:
        """``"grow"``, the pid of a worker to retire, or None.

        ``busy`` maps each of our workers that is not retiring (by pid) to whether its registry
        row shows a running job (a worker without a row yet counts as busy: it is starting).
        ``lag``: how long the oldest due job has waited (None: nothing is due).
        """
        for pid in list(self.idle_since):
            if pid not in busy or busy[pid]:
                del self.idle_since[pid]
        for pid, running in busy.items():
            if not running:
                self.idle_since.setdefault(pid, now)
        if now - self.last_change < self.policy.cooldown:
            return None
        lagging = lag is not None and lag >= self.policy.lag
        if lagging:
            return "grow" if len(busy) < self.policy.maximum else None
        if len(busy) > self.policy.minimum:
            idle = [(since, pid) for pid, since in self.idle_since.items() if now - since >= self.policy.idle]
            if idle:
                return min(idle)[1]  # the one idle longest
        return None


def read_load(store: Any, queues: list[str] | None, workers: dict[int, str]) -> tuple[float | None, dict[int, bool]]:
    """The two cheap reads of a check: the served queues' lag, and for each of our workers
    (``workers``: pid -> registry id) whether its registry row shows a running job (no row yet:
    it is starting, so busy).

    Rows are found by id, not by pid: a dead worker's row stays an hour, and its pid may be
    reused by a worker of ours meanwhile (containers); its current jobs are not that worker's."""
    from queuectl.service import workers as registry
    from queuectl.service.observe import served_lag

    lag = served_lag(store, queues, store.now())
    rows = {row.id: row for row in registry.list_workers(store)}
    return lag, {pid: wid not in rows or bool(rows[wid].current_jobs) for pid, wid in workers.items()}


def parse_count(text: str) -> tuple[int, int]:
    """``"3"`` → (3, 3); ``"1..8"`` → (1, 8). Raises ValueError with the reason."""
    low, sep, high = text.strip().partition("..")
    try:
        minimum = int(low)
        maximum = int(high) if sep else minimum
    except ValueError:
        raise ValueError(f"--count {text!r}: use a number (3) or a range MIN..MAX (1..8)") from None
    if not 1 <= minimum <= maximum <= 256:
        raise ValueError(f"--count {text!r}: use 1 <= MIN <= MAX <= 256")
    return minimum, maximum
