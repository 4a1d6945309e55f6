"""Parse the durations and instants users type: ``30s``, ``15m``, ``2h``, ``1d``, ISO-8601."""

from __future__ import annotations

import math
import re

from queuectl.core.defaults import MAX_DURATION_S as MAX_SECONDS
from queuectl.core.errors import InvalidInput

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds from ``90``, ``30s``, ``15m``, ``2h``, ``1d`` or ``1w``; refuses negatives and nonsense."""
    if isinstance(text, bool):
        raise InvalidInput(f"{what}: expected a duration like 30s, 15m, 2h or 1d, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise InvalidInput(f"{what}: expected a duration like 30s, 15m, 2h or 1d, got {text!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_SECONDS:
        raise InvalidInput(f"{what}: {text!r} is out of range (0 to 10 years)")
    return seconds


def parse_instant(text: str, what: str = "run-at") -> float:
    """Epoch seconds from an ISO-8601 time that names its timezone (``Z`` or ``+02:00``)."""
    raw = text.strip()
    try:
        from datetime import datetime  # lazily: +0.5 MB in every idle worker

        moment = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise InvalidInput(f"{what}: {text!r} is not an ISO-8601 time; use e.g. 2026-12-01T09:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidInput(
            f"{what}: {text!r} has no timezone, so its moment is ambiguous; add Z for UTC or an offset like +01:00"
        )
    return moment.timestamp()


def format_duration(seconds: float | None) -> str:
    """Short human form: ``850ms``, ``12.3s``, ``4m05s``, ``2h10m``, ``3d4h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"
