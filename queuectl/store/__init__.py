"""Open the store a URL names: ``sqlite:///path`` (default), ``postgresql://`` / ``postgres://``,
or ``mongodb://`` / ``mongodb+srv://``. A server's driver is imported only for its own URLs."""

from __future__ import annotations

import re

from queuectl.core.errors import InvalidInput
from queuectl.store.base import Store

__all__ = ["Store", "open_store", "redact_url"]


# URL options whose value is a secret (MongoDB option names are case-insensitive); the
# legacy ``sslPEMKeyPassword`` is the old name of ``tlsCertificateKeyFilePassword``
_SECRET_OPTIONS = ("tlsCertificateKeyFilePassword", "sslPEMKeyPassword", "authMechanismProperties", "proxyPassword")
_SECRET_OPTION = re.compile(r"([?&;](?:" + "|".join(_SECRET_OPTIONS) + r")=)[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password, and the secret options of its query, replaced by ``***``."""
    url = _SECRET_OPTION.sub(r"\1***", url)
    # the password runs to the last "@" of the authority, even when "/" or "@" were not escaped
    return re.sub(r"(://[^:/@]*:).*@(?=[^@]*$)", r"\1***@", url)


def open_store(url: str, create_folder: bool = True) -> Store:
    """Connect to the queue at ``url``, creating tables or indexes on first use.

    ``create_folder=False``: a SQLite file's folder must exist already (the CLI creates only the
    default data folder; a mistyped ``--db`` path must not silently become a new, empty queue).
    """
    if url.startswith("sqlite:///"):
        import os

        from queuectl.store.sql.sqlite import SqliteStore

        path, _, query = url[len("sqlite:///") :].partition("?")
        if not path:
            raise InvalidInput("sqlite URL without a file: use sqlite:///path/to/queue.db")
        folder = os.path.dirname(path) or "."
        if not create_folder and not os.path.isdir(folder):
            raise InvalidInput(
                f"no folder {folder} for the database {path}: check the path, or create the folder first "
                f"(mkdir -p {folder})"
            )
        options = dict(part.partition("=")[::2] for part in query.split("&") if part)
        synchronous = options.get("synchronous", "NORMAL")
        # sqlite:////abs/path and sqlite:///rel/path, as SQLAlchemy spells them
        return SqliteStore(path, synchronous=synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from queuectl.store.sql.postgres import PostgresStore
        except ImportError:
            raise InvalidInput("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from None

        return PostgresStore.connect(url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from queuectl.store.mongo.store import MongoStore

        return MongoStore.connect(url)
    scheme = url.partition("://")[0] if "://" in url else url
    raise InvalidInput(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///path, postgresql://, mongodb:// or mongodb+srv://"
    )
