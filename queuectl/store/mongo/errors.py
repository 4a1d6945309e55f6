"""pymongo's exceptions as queuectl's, with the URL's password redacted."""

from __future__ import annotations

from typing import Any

from queuectl.core.errors import StoreReadOnly, StoreUnavailable
from queuectl.store.base import translating_errors


def _mongo_error(store: Any, exc: Exception) -> Exception | None:
    """pymongo's exceptions as queuectl's, with the URL's password redacted."""
    import pymongo.errors as perr

    if isinstance(exc, (perr.ServerSelectionTimeoutError, perr.ConnectionFailure)):
        return StoreUnavailable(f"cannot reach MongoDB at {store.safe_url}: {first_line(exc)}")
    if isinstance(exc, perr.OperationFailure):
        if exc.code in (13, 18):  # Unauthorized, AuthenticationFailed
            return StoreUnavailable(f"MongoDB at {store.safe_url} refused the credentials")
        if exc.code in (14031, 12):  # out of disk space
            return StoreReadOnly(f"MongoDB at {store.safe_url} refuses writes: {first_line(exc)}")
        return StoreUnavailable(f"MongoDB at {store.safe_url}: {first_line(exc)}")
    return None


translate_errors = translating_errors(_mongo_error)


def first_line(exc: BaseException) -> str:
    return str(exc).split("\n")[0].split(", Timeout:")[0][:200]
