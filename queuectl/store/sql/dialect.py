"""What the SQL mixins (:mod:`.jobs`, :mod:`.claims`, :mod:`.job_reads`, :mod:`.log`,
:mod:`.registry`) need from a dialect, declared once, with the defaults SQLite and PostgreSQL
share, and the decorator that turns a dialect's driver errors into queuectl's."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from queuectl.store.base import translating_errors

# every public primitive of the mixins: the driver's exceptions as queuectl's, classified by the
# dialect of the store it runs on (SqliteStore.classify_error, PostgresStore.classify_error)
dialect_errors = translating_errors(lambda store, exc: store.classify_error(exc))


class SqlDialect:
    """The connection, the transaction and the few spellings that differ between dialects."""

    _conn: Any
    integrity_error: type[Exception] = Exception  # the driver's constraint violation
    # the key a set-based update selects rows by: SQLite's rowid follows insertion order, so a
    # batch is updated in the order it was written (by random job id it thrashed the page cache)
    row_key = "id"

    if TYPE_CHECKING:  # provided by the dialect

        def _write(self, conn: Any = None) -> AbstractContextManager[Any]: ...

    def classify_error(self, exc: Exception) -> Exception | None:
        """The queuectl error a driver exception means (None: not one of ours, re-raise it)."""
        return None

    def hint(self, index: str) -> str:
        """The dialect's spelling of "use this index" (none by default)."""
        return ""

    def bucket(self, column: str) -> str:
        """``column / ?`` rounded down to an integer (the time bucket of ``throughput``)."""
        return f"CAST({column} / ? AS INTEGER)"

    def guarded(self, conn: Any) -> AbstractContextManager[Any]:
        """Around a statement that may break a unique key and is then asked about: on PostgreSQL a
        failed statement aborts the whole transaction unless a savepoint takes it back; on SQLite
        the failed statement alone is undone, so nothing is needed."""
        return contextlib.nullcontext()
