"""SQLite's exceptions as queuectl's: one clear line for the user, the right exit code."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from queuectl.core.defaults import SQLITE_BUSY_TIMEOUT_S as BUSY_TIMEOUT_S
from queuectl.core.errors import StoreCorrupt, StoreReadOnly, StoreUnavailable
from queuectl.store.base import translating_errors

# SQLITE_CORRUPT and SQLITE_NOTADB (primary codes: extended ones carry them in the low byte)
_CORRUPT_CODES = (11, 26)
_CORRUPT_TEXT = ("malformed", "not a database")


def sqlite_error(store: Any, exc: Exception) -> Exception | None:
    if isinstance(exc, sqlite3.DatabaseError) and is_corrupt(exc):
        return corrupt_error(store.path, exc)
    if isinstance(exc, sqlite3.OperationalError):
        return _classify(exc, store.path)
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
        return StoreUnavailable(f"{store.path} is not a usable queue database ({exc})")
    return None


translate_errors = translating_errors(sqlite_error)


def is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """A damaged file, not an outage: waiting and retrying would loop forever, so callers must not."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _CORRUPT_CODES:
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _CORRUPT_TEXT)


def corrupt_error(path: str, exc: Exception) -> StoreCorrupt:
    return StoreCorrupt(
        f"{path} is damaged ({exc}): stop its workers and restore it from a backup "
        "(sqlite3's .recover command may salvage its rows)"
    )


def is_full(exc: BaseException | None) -> bool:
    """SQLITE_FULL: the disk (or the filesystem holding the WAL) has no room left."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == 13
    return "full" in str(exc).lower()


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
