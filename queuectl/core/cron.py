"""Cron arithmetic: the next fire time of an expression in a timezone (croniter, imported lazily)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from queuectl.core.errors import InvalidInput


def zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {tz!r}; use an IANA name like Europe/Berlin or UTC") from None


def next_fire_time(cron: str, tz: str, after: float) -> float:
    """The first fire time strictly after ``after``, computed in the schedule's timezone (DST-aware)."""
    from croniter import croniter

    try:
        return float(croniter(cron, datetime.fromtimestamp(after, zone(tz))).get_next(float))
    except (ValueError, KeyError, ArithmeticError) as exc:  # CroniterBadDateError is a ValueError
        raise InvalidInput(f"invalid cron expression {cron!r}: {exc}") from None
