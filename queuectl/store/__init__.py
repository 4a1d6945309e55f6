"""Open the store a URL names: ``sqlite:///path`` (default) or ``mongodb://`` / ``mongodb+srv://``."""

from __future__ import annotations

import re

from queuectl.core.errors import InvalidInput
from queuectl.store.base import Store

__all__ = ["Store", "open_store", "redact_url"]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to print or log."""
    # the password runs to the last "@" of the authority, even when "/" or "@" were not escaped
    return re.sub(r"(://[^:/@]*:).*@(?=[^@]*$)", r"\1***@", url)


def open_store(url: str) -> Store:
    """Connect to the queue at ``url``, creating tables or indexes on first use."""
    if url.startswith("sqlite:///"):
        from queuectl.store.sql.sqlite import SqliteStore

        path, _, query = url[len("sqlite:///"):].partition("?")
        if not path:
            raise InvalidInput("sqlite URL without a file: use sqlite:///path/to/queue.db")
        options = dict(part.partition("=")[::2] for part in query.split("&") if part)
        synchronous = options.get("synchronous", "NORMAL")
        # sqlite:////abs/path and sqlite:///rel/path, as SQLAlchemy spells them
        return SqliteStore(path, synchronous=synchronous)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from queuectl.store.mongo.store import MongoStore

        return MongoStore.connect(url)
    scheme = url.partition("://")[0] if "://" in url else url
    raise InvalidInput(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///path, mongodb:// or mongodb+srv://"
    )
