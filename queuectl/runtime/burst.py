"""When ``worker start --burst`` may stop, and what it says it left.

A burst worker runs what there is to run and exits. "Nothing to claim this instant" is not
enough: a retry due a second later, or an on-finish hook that just fell due, would be left
behind for a worker that may never come. So a burst worker waits while a job of its queues
(paused ones aside) becomes due within :data:`WINDOW_S`, or a hook is due or running; then it
stops, and names what it leaves for later ("left 1 job whose retry is due in 9m58s").
"""

from __future__ import annotations

from dataclasses import dataclass

from queuectl.core.durations import format_duration
from queuectl.core.lifecycle import CLAIMABLE
from queuectl.core.models import FAILED, PENDING, WAITING
from queuectl.service.queues import paused_queues
from queuectl.store import Store

WINDOW_S = 10.0  # a job due this soon is run before a burst worker stops


@dataclass
class Leftover:
    """What is still queued for a burst worker's queues, and when the next of it is due."""

    next_due: float | None  # None: nothing claimable at all (paused queues aside)
    retries: int = 0  # failed jobs waiting for their retry
    delayed: int = 0  # pending jobs whose time has not come
    waiting: int = 0  # jobs waiting for their parents
    paused: int = 0  # claimable jobs in paused queues

    def due_within(self, now: float, window: float = WINDOW_S) -> bool:
        return self.next_due is not None and self.next_due - now <= window

    def describe(self, now: float) -> str:
        """``left 1 job whose retry is due in 9m58s``, or ``nothing left``."""
        parts = []
        when = f" (the next is due in {format_duration(max(0.0, self.next_due - now))})" if self.next_due else ""
        if self.retries:
            parts.append(_jobs(self.retries, "whose retry is due later", "whose retries are due later"))
        if self.delayed:
            parts.append(_jobs(self.delayed, "delayed", "delayed"))
        if self.waiting:
            parts.append(_jobs(self.waiting, "waiting for its parents", "waiting for their parents"))
        if self.paused:
            parts.append(_jobs(self.paused, "in a paused queue", "in paused queues"))
        if not parts:
            return "nothing left"
        if len(parts) == 1 and self.retries == 1 and self.next_due:
            return f"left 1 job whose retry is due in {format_duration(max(0.0, self.next_due - now))}"
        return "left " + ", ".join(parts) + when


def _jobs(count: int, one: str, many: str) -> str:
    return f"1 job {one}" if count == 1 else f"{count:,} jobs {many}"


def leftover(store: Store, queues: list[str] | None) -> Leftover:
    """Read what ``queues`` (None: every queue) still hold for later, from the indexed counts."""
    counts = store.counts()
    paused = paused_queues(store)
    served = {name: per_state for name, per_state in counts.items() if queues is None or name in queues}
    ready = sorted(
        name
        for name, per_state in served.items()
        if name not in paused and any(per_state.get(state) for state in CLAIMABLE)
    )
    result = Leftover(store.next_due(ready) if ready else None)
    for name, per_state in served.items():
        if name in paused:
            result.paused += sum(per_state.get(state, 0) for state in CLAIMABLE)
            continue
        result.retries += per_state.get(FAILED, 0)
        result.delayed += per_state.get(PENDING, 0)
        result.waiting += per_state.get(WAITING, 0)
    return result


def hooks_pending(store: Store) -> bool:
    """An on-finish hook is due (a burst worker runs it before it stops)."""
    return bool(store.hooks_due(1))
