"""SQLite's exceptions as queuectl's: one clear line for the user, the right exit code."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from queuectl.core.defaults import SQLITE_BUSY_TIMEOUT_S as BUSY_TIMEOUT_S
from queuectl.core.errors import StoreReadOnly, StoreUnavailable
from queuectl.store.base import translating_errors


def sqlite_error(store: Any, exc: Exception) -> Exception | None:
    if isinstance(exc, sqlite3.OperationalError):
        return _classify(exc, store.path)
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
        return StoreUnavailable(f"{store.path} is not a usable queue database ({exc})")
    return None


translate_errors = translating_errors(sqlite_error)


def _classify(exc: sqlite3.OperationalError, path: str) -> Exception:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreUnavailable(f"{path} is locked by another process (waited up to {BUSY_TIMEOUT_S:g}s); try again")
    if "readonly" in text or "read-only" in text:
        stuck = [
            name
            for name in (path, f"{path}-wal", f"{path}-shm")
            if os.path.exists(name) and not os.access(name, os.W_OK)
        ] or [path]
        verb = "is" if len(stuck) == 1 else "are"
        return StoreReadOnly(
            f"{', '.join(stuck)} {verb} read-only: writes are refused; fix with: chmod 600 {' '.join(stuck)}"
        )
    if "full" in text:
        return StoreReadOnly(f"the disk holding {path} is full: free space and try again")
    if "unable to open" in text:
        return StoreUnavailable(f"cannot open {path}: check that its folder exists and is writable")
    return StoreUnavailable(f"{path}: {exc}")
