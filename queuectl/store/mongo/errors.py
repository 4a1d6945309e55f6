"""pymongo's exceptions as queuectl's, with the URL's password redacted.

Only what a retry can cure is "unavailable" (exit 5, and a worker waits it out): network
errors, elections, timeouts, and server errors pymongo labels retryable. A full disk or an
Atlas storage quota is "full" (exit 6: the worker stops saving output, keeps its outcomes).
Anything else is deterministic (not authorized, a bad request): one line, exit 1, and a worker
does not retry it forever.
"""

from __future__ import annotations

from typing import Any

from queuectl.core.errors import QueuectlError, StoreReadOnly, StoreUnavailable
from queuectl.store.base import translating_errors

AUTH_FAILED = 18  # AuthenticationFailed: the credentials were refused
UNAUTHORIZED = 13  # Unauthorized: the user lacks a role for this command
DISK_FULL = (14031,)  # OutOfDiskSpace
ATLAS_ERROR = 8000  # Atlas: "you are over your space quota", among others
# server errors that a later retry can succeed past (elections, shutdowns, timeouts, conflicts)
TRANSIENT = {
    6,  # HostUnreachable
    7,  # HostNotFound
    50,  # MaxTimeMSExpired
    64,  # WriteConcernFailed (wtimeout)
    89,  # NetworkTimeout
    91,  # ShutdownInProgress
    112,  # WriteConflict
    133,  # FailedToSatisfyReadPreference
    189,  # PrimarySteppedDown
    262,  # ExceededTimeLimit
    9001,  # SocketException
    10107,  # NotWritablePrimary
    11600,  # InterruptedAtShutdown
    11602,  # InterruptedDueToReplStateChange
    13435,  # NotPrimaryNoSecondaryOk
    13436,  # NotPrimaryOrSecondary
}


def _mongo_error(store: Any, exc: Exception) -> Exception | None:
    """pymongo's exceptions as queuectl's, with the URL's password redacted."""
    import pymongo.errors as perr

    from queuectl.store import redact_message

    where = f"MongoDB at {store.safe_url}"
    message = redact_message(first_line(exc), store.url)
    if isinstance(exc, (perr.ServerSelectionTimeoutError, perr.ConnectionFailure)):
        return StoreUnavailable(f"cannot reach {where}: {message}")
    if isinstance(exc, perr.DocumentTooLarge):
        return QueuectlError(f"{where} refused a request over its 16 MiB limit: {message}")
    if isinstance(exc, perr.OperationFailure):
        code = exc.code
        if isinstance(exc, perr.BulkWriteError):
            errors = exc.details.get("writeErrors") or exc.details.get("writeConcernErrors") or [{}]
            code = errors[0].get("code", code)
        if code == AUTH_FAILED:
            return StoreUnavailable(f"{where} refused the credentials")
        if code == UNAUTHORIZED:
            return QueuectlError(f"{where}: the user is not authorized for this ({message}); grant it readWrite")
        if code in DISK_FULL or (code == ATLAS_ERROR and "quota" in message.lower()):
            return StoreReadOnly(f"{where} refuses writes: {message}")
        if code in TRANSIENT or _labelled_transient(exc) or getattr(exc, "timeout", False):
            return StoreUnavailable(f"{where}: {message}")
        return QueuectlError(f"{where} refused the request: {message}")
    if isinstance(exc, perr.PyMongoError) and getattr(exc, "timeout", False):
        return StoreUnavailable(f"{where}: {message}")
    return None


def _labelled_transient(exc: Any) -> bool:
    return any(exc.has_error_label(label) for label in ("RetryableWriteError", "TransientTransactionError"))


translate_errors = translating_errors(_mongo_error)


def first_line(exc: BaseException) -> str:
    return str(exc).split("\n")[0].split(", Timeout:")[0][:200]
