"""PostgreSQL backend: the shared SQL mixins of :mod:`queuectl.store.sql` on a server many hosts use.

A unit of work is one transaction (``BEGIN`` ... ``COMMIT``) on an autocommit connection, so each
primitive outside a unit is a transaction of its own, as on SQLite. What differs from SQLite:

- claims lock the rows they take with ``FOR UPDATE SKIP LOCKED``: concurrent claimers never wait
  for each other and never get the same job;
- the clock is the server's: each transaction's ``BEGIN`` also reads ``clock_timestamp()`` (in the
  same round trip), and :meth:`PostgresStore.now` is this host's monotonic clock plus the offset
  of the best recent reading, so leases and due times do not depend on the hosts' clocks agreeing;
- idle workers wake on ``LISTEN``/``NOTIFY`` (:mod:`queuectl.store.sql.pg_wake`);
- a lost connection is an outage (:class:`StoreUnavailable`); the next call outside a transaction
  reconnects. Connect, statement and lock waits are short, so an outage shows within seconds.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, NoReturn

from queuectl.core.defaults import (
    PG_CLOCK_SAMPLE_S,
    PG_CONNECT_TIMEOUT_S,
    PG_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    PG_LOCK_TIMEOUT_MS,
    PG_STATEMENT_TIMEOUT_MS,
)
from queuectl.core.errors import InvalidInput
from queuectl.store.base import Store, Waker
from queuectl.store.sql.counters import PG_COMPACT, PG_READ
from queuectl.store.sql.jobs import SqlJobs
from queuectl.store.sql.pg_errors import first_line, pg_error
from queuectl.store.sql.pg_schema import SCHEMA_VERSION, known_version, migrate
from queuectl.store.sql.registry import SqlRegistry, registry_columns

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "")
_SECURE_SSLMODES = ("require", "verify-ca", "verify-full")
_BEGIN = "BEGIN; SELECT extract(epoch from clock_timestamp())"


class PgConnection:
    """The store's connection as the shared SQL expects it: ``?`` placeholders, ``execute`` and
    ``executemany`` returning a cursor. Reconnects (outside a transaction) after a lost connection."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._spelled: dict[str, str] = {}

    def _sql(self, sql: str) -> str:
        spelled = self._spelled.get(sql)
        if spelled is None:
            spelled = self._spelled[sql] = sql.replace("%", "%%").replace("?", "%s")
        return spelled

    def execute(self, sql: str, params: Any = None) -> Any:
        raw = self._store._live()
        if not params:
            return raw.execute(sql)
        return raw.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Any) -> Any:
        cursor = self._store._live().cursor()
        cursor.executemany(self._sql(sql), rows)
        return cursor


class PostgresStore(SqlJobs, SqlRegistry, Store):
    """A queue in one PostgreSQL schema (the URL's database; its ``search_path`` picks the schema)."""

    transactional = True
    skip_locked = " FOR UPDATE SKIP LOCKED"
    parent_lock = " FOR SHARE"
    child_lock = " FOR UPDATE OF c"
    paused_inline = True
    queue_lock = " FOR UPDATE"
    counters_sql = PG_READ  # delta rows, summed: see queuectl.store.sql.counters

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        from queuectl.store import redact_message, redact_url

        self.url = url
        self.safe_url = redact_url(url)
        self.integrity_error = psycopg.IntegrityError
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise InvalidInput(
                f"invalid PostgreSQL URL {self.safe_url}: {redact_message(first_line(exc), url)}"
            ) from None
        self.password = str(params.get("password") or "") or None
        self._params = _with_timeouts(params)
        _warn_without_tls(self._params, self.safe_url)
        self._raw: Any = None
        self._depth = 0
        self._offset = 0.0  # server clock - this host's monotonic clock, from the best recent reading
        self._clock_rtt = float("inf")  # the round trip of that reading (its error is at most half)
        self._clock_at = 0.0  # when it was taken (monotonic)
        self._update_sql: dict[tuple[Any, ...], str] = {}
        self._conn = PgConnection(self)
        self._joined: contextlib.nullcontext[Any] = contextlib.nullcontext(self._conn)
        self._setup()

    @classmethod
    def connect(cls, url: str) -> PostgresStore:
        return cls(url)

    def classify_error(self, exc: Exception) -> Exception | None:
        return pg_error(self, exc)

    def bucket(self, column: str) -> str:
        return f"floor({column} / ?)::bigint"

    def guarded(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        return _savepoint(conn)

    def upsert(self, kind: str, key: str, columns: list[str], replace: bool) -> str:
        insert = f"INSERT INTO {kind} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        if not replace:
            return f"{insert} ON CONFLICT ({key}) DO NOTHING"
        sets = [
            f"{name} = EXCLUDED.{name}" if name in columns else f"{name} = DEFAULT"
            for name in registry_columns(kind)
            if name != key
        ]
        return f"{insert} ON CONFLICT ({key}) DO UPDATE SET {', '.join(sets)}"

    # --- the connection ---------------------------------------------------------------------

    def _setup(self) -> None:
        """Connect, and create or bring forward the schema on first use."""
        try:
            conn = self._live()
            self.channel = "queuectl:" + conn.execute("SELECT current_schema()").fetchone()[0]
            if known_version(conn) < SCHEMA_VERSION:
                with self._write():
                    migrate(self._conn)
        except Exception as exc:
            mapped = pg_error(self, exc)
            if mapped is None:
                raise
            raise mapped from None

    def _live(self) -> Any:
        """The open connection; a lost one is replaced, unless a transaction was in flight."""
        raw = self._raw
        if raw is not None and not raw.closed:
            return raw
        if self._depth:
            import psycopg

            raise psycopg.OperationalError("the connection was lost during a transaction")
        self._raw = self._open()
        return self._raw

    def _open(self) -> Any:
        import psycopg

        raw = psycopg.connect(**self._params, autocommit=True)
        mono = time.monotonic()
        row = raw.execute("SELECT extract(epoch from clock_timestamp())").fetchone()
        assert row is not None
        self.sample_clock(mono, float(row[0]))
        return raw

    def sample_clock(self, mono: float, server: float) -> None:
        """Take in one reading of the server's clock, asked at ``mono`` (monotonic) and answered now.

        The reading is anchored to this host's monotonic clock, never to its wall clock, so a
        step of the host's clock (NTP, an operator) changes nothing here.

        NTP's rule: the reading with the shortest round trip is the most exact (off by at most
        half of it), so a slow answer on a busy machine does not move the clock; the best one is
        kept until a shorter comes or :data:`PG_CLOCK_SAMPLE_S` has passed, so that a clock step
        on either side is taken in within seconds.
        """
        rtt = time.monotonic() - mono
        if rtt <= self._clock_rtt or mono - self._clock_at > PG_CLOCK_SAMPLE_S:
            self._offset = server - (mono + rtt / 2)
            self._clock_rtt, self._clock_at = rtt, mono

    def connection_params(self) -> dict[str, Any]:
        """The connection parameters (with the password): the waker opens a connection of its own."""
        return dict(self._params)

    def now(self) -> float:
        return time.monotonic() + self._offset

    def _write(self, conn: Any = None) -> contextlib.AbstractContextManager[Any]:
        """One transaction; inside a unit of work it joins that one."""
        if self._depth:
            return self._joined
        return _Transaction(self, translate=False)

    def unit(self) -> contextlib.AbstractContextManager[Any]:
        if self._depth:
            return self._joined
        return _Transaction(self, translate=True)

    def repair(self, now: float) -> int:
        """Fold the counters' delta rows into one row per (queue, state), so that a read sums a
        few rows (the housekeeper runs it with its retention pass, every minute). Nothing becomes
        claimable by it: 0."""
        with self._write() as conn:
            conn.execute(PG_COMPACT)
        return 0

    # --- waking -----------------------------------------------------------------------------

    def waker(self, worker_id: str) -> Waker | None:
        from queuectl.store.sql.pg_wake import PgWaker

        return PgWaker(self.connection_params(), self.channel)

    def notify(self, stop: bool = False) -> None:
        with contextlib.suppress(Exception):  # a wake-up is a courtesy: workers poll anyway
            self._conn.execute("SELECT pg_notify(?, ?)", (self.channel, "s" if stop else "!"))

    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()

    # --- for tests and diagnostics ----------------------------------------------------------

    def query_plan(self, sql: str, params: Any = ()) -> list[str]:
        """``EXPLAIN`` lines for a statement (used to prove index use)."""
        return [row[0] for row in self._conn.execute(f"EXPLAIN {sql}", list(params))]


def _with_timeouts(params: dict[str, Any]) -> dict[str, Any]:
    """The URL's parameters with short timeouts added (the URL's own settings win)."""
    params = dict(params)
    params.setdefault("connect_timeout", str(PG_CONNECT_TIMEOUT_S))
    params.setdefault("application_name", "queuectl")
    for name, value in (("keepalives_idle", "5"), ("keepalives_interval", "2"), ("keepalives_count", "3")):
        params.setdefault(name, value)
    params.setdefault("tcp_user_timeout", str(PG_STATEMENT_TIMEOUT_MS))
    ours = (
        f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS} -c lock_timeout={PG_LOCK_TIMEOUT_MS} "
        f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_TIMEOUT_MS} "
        "-c jit=off"  # compiling a claim over a big table costs more than running it
    )
    params["options"] = f"{ours} {params['options']}" if params.get("options") else ours
    return params


def _warn_without_tls(params: dict[str, Any], safe_url: str) -> None:
    hosts = str(params.get("host") or "").split(",")
    remote = [host for host in hosts if host not in _LOCAL_HOSTS and not host.startswith("/")]
    if remote and params.get("sslmode") not in _SECURE_SSLMODES:
        print(
            f"queuectl: warning: PostgreSQL at {safe_url} is reached without TLS; add sslmode=verify-full to the URL",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _savepoint(conn: Any) -> Any:
    conn.execute("SAVEPOINT guarded")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO guarded")
        raise
    conn.execute("RELEASE guarded")


class _Transaction:
    """``BEGIN`` (reading the server's clock) ... ``COMMIT``, or ``ROLLBACK`` on an exception.

    ``translate``: BEGIN and COMMIT fail as queuectl's errors (a unit of work, which no
    translating primitive wraps); inside a primitive its own wrapper translates them.
    """

    __slots__ = ("_store", "_translate")

    def __init__(self, store: PostgresStore, translate: bool) -> None:
        self._store = store
        self._translate = translate

    def __enter__(self) -> PgConnection:
        store = self._store
        try:
            raw = store._live()
            if raw.info.transaction_status:  # not idle: a failure left one open, start clean
                raw.execute("ROLLBACK")
            mono = time.monotonic()
            cursor = raw.execute(_BEGIN)
            cursor.nextset()
            server = cursor.fetchone()[0]
        except Exception as exc:
            self._raise(exc)
        store.sample_clock(mono, float(server))
        store._depth = 1
        return store._conn

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        store = self._store
        store._depth = 0
        raw = store._raw
        if kind is not None:
            with contextlib.suppress(Exception):
                raw.execute("ROLLBACK")
            return
        try:
            raw.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(Exception):
                raw.execute("ROLLBACK")
            self._raise(exc)

    def _raise(self, exc: Exception) -> NoReturn:
        store = self._store
        mapped = pg_error(store, exc) if self._translate else None
        if mapped is None:
            raise exc
        raise mapped from None
