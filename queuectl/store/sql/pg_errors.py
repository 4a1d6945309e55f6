"""psycopg's exceptions as queuectl's: one line, the right exit code, and never a password.

A lost connection, a restarting server, a timeout, a deadlock victim: all are outages
(:class:`StoreUnavailable`), which a worker waits out keeping its finished outcomes. A server that
refuses writes (a standby, a full disk) is :class:`StoreReadOnly`. Constraint violations are the
store's own business (duplicate ids, unique keys) and pass through; so do programming errors.
"""

from __future__ import annotations

from typing import Any

from queuectl.core.errors import StoreReadOnly, StoreUnavailable

# SQLSTATEs of a server that answers but refuses to write
_READ_ONLY_STATES = {"25006": "is read-only (a standby?)", "53100": "has a full disk"}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def scrub(text: str, password: str | None) -> str:
    """``text`` with the password replaced, should a driver message ever quote it."""
    return text.replace(password, "***") if password else text


def pg_error(store: Any, exc: Exception) -> Exception | None:
    """The queuectl error for a psycopg exception raised by ``store`` (None: re-raise it)."""
    import psycopg

    from queuectl.store import redact_message

    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.IntegrityError):
        return None
    where = f"PostgreSQL at {store.safe_url}"
    line = scrub(redact_message(first_line(exc), store.url), store.password)
    state = getattr(exc, "sqlstate", None)
    if state in _READ_ONLY_STATES:
        return StoreReadOnly(f"{where} {_READ_ONLY_STATES[state]}: writes are refused ({line})")
    if state == "42501":  # insufficient privilege: the account cannot use the queue's tables
        return StoreReadOnly(f"{where} refuses this account: {line}")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreUnavailable(f"cannot use {where}: {line}")
    return None
