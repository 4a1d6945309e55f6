"""Opening a MongoDB connection with the durability and time bounds the queue relies on.

- ``w=majority``: an acknowledged claim, outcome or enqueue survives a failover (with ``w:1``, the
  default on some deployments, e.g. with an arbiter, it can be rolled back), bounded by
  ``wtimeoutMS`` so a lagging secondary delays a write by seconds, not forever.
- ``readConcernLevel=majority``: what a decision reads (another job's state, a batch's commit)
  cannot be rolled back afterwards.
- ``socketTimeoutMS`` shorter than a heartbeat: a stalled server fails the worker's call in
  seconds, so it can still stop its jobs before their leases could be taken over.
- Short server-selection and connect timeouts: a dead server is reported in seconds.

A URL that sets any of these itself keeps its own value.
"""

from __future__ import annotations

import sys
from typing import Any

from queuectl.core.defaults import MONGO_CONNECT_TIMEOUT_MS as CONNECT_TIMEOUT_MS
from queuectl.core.errors import InvalidInput, StoreUnavailable
from queuectl.store.mongo.errors import first_line

SOCKET_TIMEOUT_MS = 4000  # below the smallest sensible heartbeat (default 5 s)
WRITE_TIMEOUT_MS = 3000  # w:majority gives up (uncertain, resolved by reading) before the socket does

CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": CONNECT_TIMEOUT_MS,
    "connectTimeoutMS": CONNECT_TIMEOUT_MS,
    "socketTimeoutMS": SOCKET_TIMEOUT_MS,
    "w": "majority",
    "wTimeoutMS": WRITE_TIMEOUT_MS,
    "readConcernLevel": "majority",
    "retryWrites": True,
    "retryReads": True,
}


def client_options(url_options: dict[str, Any]) -> dict[str, Any]:
    """Our defaults, minus any option the URL sets itself (option names are case-insensitive)."""
    given = {name.lower() for name in url_options}
    return {name: value for name, value in CLIENT_OPTIONS.items() if name.lower() not in given}


def _dns_failure(url: str, exc: Exception) -> bool:
    """A ``mongodb+srv`` URL whose DNS lookup failed: the URL may be fine, the resolver is not."""
    import pymongo.errors as perr

    text = str(exc).lower()
    return (
        url.startswith("mongodb+srv://")
        and isinstance(exc, perr.ConfigurationError)
        and any(word in text for word in ("dns", "resolution", "resolve", "timed out", "nameserver"))
    )


def open_client(url: str) -> tuple[Any, str]:
    """A pymongo client for ``url`` and the database it names (default ``queuectl``)."""
    import pymongo
    from pymongo.uri_parser import parse_uri

    from queuectl.store import redact_message, redact_url

    try:
        parsed = parse_uri(url)
    except Exception as exc:  # pymongo raises InvalidURI, ConfigurationError, ValueError
        if _dns_failure(url, exc):
            raise StoreUnavailable(
                f"cannot resolve MongoDB at {redact_url(url)}: {redact_message(first_line(exc), url)}"
            ) from None
        raise InvalidInput(f"invalid MongoDB URL {redact_url(url)}: {redact_message(first_line(exc), url)}") from None
    hosts = [host for host, _ in parsed.get("nodelist", [])]
    options = parsed.get("options", {})
    tls = options.get("tls") or url.startswith("mongodb+srv://")
    if not tls and any(h not in ("localhost", "127.0.0.1", "::1") for h in hosts):
        print(
            f"queuectl: warning: MongoDB at {redact_url(url)} is reached without TLS; add tls=true to the URL",
            file=sys.stderr,
        )
    client: Any = pymongo.MongoClient(url, tz_aware=True, **client_options(options))
    try:
        client.admin.command("ping")
    except Exception as exc:
        client.close()
        raise StoreUnavailable(
            f"cannot reach MongoDB at {redact_url(url)}: {redact_message(first_line(exc), url)}"
        ) from None
    return client, parsed.get("database") or "queuectl"
