"""A queue's rate limit (``queue rate api 10/m``): at most N claims started in any window of W
seconds, across every worker and host. The rule, once; each store keeps the queue's log of
recent claim times and applies it atomically (SQL: in the claim's transaction, under the queue
row's lock; MongoDB: one conditional update of the queue's document per claim).

A sliding log rather than a counter per fixed window: a fixed window lets 2N through around its
edge (N at the end of one, N at the start of the next). The log holds at most N times, so a
rate of 10,000/h costs a claim of that queue one small JSON array; a queue without a rate pays
nothing (it is never read)."""

from __future__ import annotations

import re

from queuectl.core.errors import InvalidInput

WINDOWS = {"s": 1.0, "m": 60.0, "h": 3600.0}
MAX_COUNT = 10_000  # claims per window: the log a claim reads and writes stays small
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")


def parse_rate(text: str) -> tuple[int, float] | None:
    """``"10/m"`` -> (10, 60.0); ``"none"`` -> None (no rate). InvalidInput otherwise."""
    if text.strip().lower() == "none":
        return None
    match = _RATE_RE.match(text)
    if not match:
        raise InvalidInput(f"queue rate: expected N/s, N/m or N/h (such as 10/m), or none; got {text!r}")
    count = int(match.group(1))
    if not 1 <= count <= MAX_COUNT:
        raise InvalidInput(f"queue rate: expected 1 to {MAX_COUNT:,} claims per window, got {count}")
    return count, WINDOWS[match.group(2)]


def format_rate(count: int, window: float) -> str:
    unit = next((name for name, seconds in WINDOWS.items() if seconds == window), None)
    return f"{count}/{unit}" if unit else f"{count}/{window:g}s"


def recent(log: list[float], now: float, window: float) -> list[float]:
    """The claim times still inside the window ending at ``now``, oldest first."""
    return sorted(at for at in log if at > now - window)


def room(log: list[float], count: int, window: float, now: float, want: int) -> tuple[int, float | None]:
    """How many claims may start at ``now`` (at most ``want``) given the ``recent`` log, and,
    when that is fewer than wanted, when the next one may (the time the oldest claim in the way
    leaves the window; None: no wait). Pure: the store writes ``now`` into the log per claim."""
    free = max(0, count - len(log))
    if free >= want:
        return want, None
    if not log:
        return free, None
    return free, log[max(0, len(log) - count)] + window  # the oldest entry that must leave first
