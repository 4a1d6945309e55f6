"""The SQL store's small tables: cron schedules, paused queues, runtime config, workers, API tokens.

One generic record interface (put, list, compare-and-set, delete) over four tables; what the
records mean is the service layer's business. A mixin of the SQL stores, apart from the jobs; the
dialect spells the upsert (:meth:`SqlRegistry.upsert`) and classifies its driver's errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from queuectl.core.errors import InvalidInput
from queuectl.core.models import Event
from queuectl.store.sql.dialect import SqlDialect
from queuectl.store.sql.dialect import dialect_errors as _translate_errors


@dataclass(frozen=True)
class _Table:
    key: str
    columns: tuple[str, ...]  # the key first
    json: tuple[str, ...] = ()
    bools: tuple[str, ...] = ()


_TABLES = {
    "schedules": _Table(
        "name",
        ("name", "cron", "tz", "spec", "next_fire_at", "last_fire_at", "paused", "created_at"),
        json=("spec",),
        bools=("paused",),
    ),
    "queues": _Table("name", ("name", "paused", "max_running", "rate_count", "rate_window"), bools=("paused",)),
    "config": _Table("key", ("key", "value")),
    "batches": _Table("id", ("id", "state", "created_at", "touched_at", "count")),
    "workers": _Table(
        "id",
        (
            "id",
            "host",
            "pid",
            "state",
            "started_at",
            "last_heartbeat",
            "queues",
            "concurrency",
            "current_jobs",
            "stop_requested",
            "scale",
        ),
        json=("current_jobs",),
        bools=("stop_requested",),
    ),
    # API tokens of `queuectl serve`: only a hash of each secret is kept
    "tokens": _Table("id", ("id", "name", "scopes", "hash", "created_at")),
}


def registry_columns(kind: str) -> tuple[str, ...]:
    """Every column of a kind's table, its key first."""
    return _table(kind).columns


def _table(kind: str) -> _Table:
    try:
        return _TABLES[kind]
    except KeyError:
        raise InvalidInput(f"unknown registry kind {kind!r}") from None


def _to_sql(table: _Table, name: str, value: Any) -> Any:
    if name not in table.columns:
        raise InvalidInput(f"unknown field {name!r} of a {table.key}-keyed record")
    if name in table.json:
        return json.dumps(value)
    if name in table.bools:
        return int(bool(value))
    return value


def _where(table: _Table, key: str | None, expect: dict[str, Any] | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if key is not None:
        clauses.append(f"{table.key} = ?")
        params.append(key)
    for name, value in (expect or {}).items():
        values = value if isinstance(value, tuple) else (value,)
        clauses.append(f"{name} IN ({', '.join('?' * len(values))})")
        params.extend(_to_sql(table, name, v) for v in values)
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


class SqlRegistry(SqlDialect):
    """Records in the small tables, in the dialect's connection and transaction."""

    if TYPE_CHECKING:  # SqlLog's, beside it in the store's classes

        def _log_in(self, conn: Any, job_id: str | None, attempt: Any, keep: int, events: Sequence[Event]) -> None: ...

    def upsert(self, kind: str, key: str, columns: list[str], replace: bool) -> str:
        """The insert of one record: with ``replace`` it overwrites the record under the same
        key (columns not given back to their defaults), else it leaves an existing one alone."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        return f"{verb} INTO {kind} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        def _log_in(self, conn: Any, job_id: str | None, attempt: Any, keep: int, events: Sequence[Event]) -> None: ...

    @_translate_errors
    def registry_put(
        self, kind: str, key: str, record: dict[str, Any], replace: bool = True, events: Sequence[Event] = ()
    ) -> bool:
        table = _table(kind)
        fields = {name: value for name, value in record.items() if name != table.key}
        columns = [table.key, *fields]
        values = [key, *(_to_sql(table, name, value) for name, value in fields.items())]
        with self._write() as conn:
            written = conn.execute(self.upsert(kind, table.key, columns, replace), values).rowcount == 1
            if written and events:
                self._log_in(conn, None, None, 0, events)
            return written

    @_translate_errors
    def registry_list(self, kind: str, key: str | None = None) -> list[dict[str, Any]]:
        table = _table(kind)
        where, params = _where(table, key, None)
        rows = self._conn.execute(
            f"SELECT {', '.join(table.columns)} FROM {kind}{where} ORDER BY {table.key}", params
        ).fetchall()
        records = []
        for row in rows:
            record = dict(zip(table.columns, row, strict=True))
            for name in table.json:
                record[name] = json.loads(record[name]) if record[name] is not None else None
            for name in table.bools:
                record[name] = bool(record[name])
            records.append(record)
        return records

    @_translate_errors
    def registry_update(
        self,
        kind: str,
        changes: dict[str, Any],
        key: str | None = None,
        expect: dict[str, Any] | None = None,
        events: Sequence[Event] = (),
    ) -> int:
        table = _table(kind)
        where, params = _where(table, key, expect)
        sets = ", ".join(f"{name} = ?" for name in changes)
        values = [_to_sql(table, name, value) for name, value in changes.items()]
        with self._write() as conn:
            count = int(conn.execute(f"UPDATE {kind} SET {sets}{where}", [*values, *params]).rowcount)
            if count and events:
                self._log_in(conn, None, None, 0, events)
            return count

    @_translate_errors
    def registry_delete(self, kind: str, key: str, expect: dict[str, Any] | None = None) -> int:
        table = _table(kind)
        where, params = _where(table, key, expect)
        with self._write() as conn:
            return conn.execute(f"DELETE FROM {kind}{where}", params).rowcount
