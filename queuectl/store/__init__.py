"""Open the store a URL names: ``sqlite:///path`` (default), ``postgresql://`` / ``postgres://``,
or ``mongodb://`` / ``mongodb+srv://``. A server's driver is imported only for its own URLs."""

from __future__ import annotations

import re

from queuectl.core.errors import InvalidInput
from queuectl.store.base import Store

__all__ = ["Store", "open_store", "redact_message", "redact_url"]


# URL options whose value is a secret, by one rule for every driver: any name ending in
# "password" (libpq's ``password`` and ``sslpassword``, MongoDB's ``tlsCertificateKeyFilePassword``,
# its legacy ``sslPEMKeyPassword``, ``proxyPassword``), and MongoDB's ``authMechanismProperties``
# (it can carry an AWS session token). Names are compared percent-decoded and case-insensitively:
# libpq decodes ``%70assword`` to ``password``, and MongoDB option names ignore case.
_OPTION = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")
# the password runs to the last "@" of the authority, even when "/" or "@" were not escaped
_USERINFO = re.compile(r"(://[^:/@]*:)(.*)@(?=[^@]*$)")


def _is_secret(name: str) -> bool:
    from urllib.parse import unquote

    name = unquote(name).lower()
    return name.endswith("password") or name == "authmechanismproperties"


def _secrets(url: str) -> list[str]:
    """The URL's secret values as written, and percent-decoded (a driver may quote either)."""
    from urllib.parse import unquote

    found = [value for _, name, value in _OPTION.findall(url) if _is_secret(name)]
    found += [match.group(2) for match in _USERINFO.finditer(url)]
    return [text for value in found for text in {value, unquote(value)} if text]


def redact_url(url: str) -> str:
    """The URL with any password, and the secret options of its query, replaced by ``***``."""
    url = _OPTION.sub(lambda m: f"{m[1]}{m[2]}=***" if _is_secret(m[2]) else m[0], url)
    return _USERINFO.sub(r"\1***@", url)


def redact_message(text: str, url: str) -> str:
    """A driver's message about ``url`` made safe to print: the URL (psycopg's parse errors quote
    it whole) and any secret of it (or a part a driver quotes, such as a bad percent-escape) redacted."""
    text = text.replace(url, redact_url(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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
