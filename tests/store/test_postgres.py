"""What only the PostgreSQL store does: the server's clock, LISTEN/NOTIFY surviving a lost
connection, schema versions, errors (one line, no password) and the TLS warning.

The shared behaviour is the store contract (test_contract.py), run on PostgreSQL too.
"""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pgserver import fresh_schema, postgres_url

from queuectl.core.errors import StoreUnavailable
from queuectl.store import open_store
from queuectl.store.sql import postgres as pg_module
from queuectl.store.sql.pg_schema import SCHEMA_VERSION
from queuectl.store.sql.postgres import PostgresStore, _warn_without_tls


@pytest.fixture
def pg_url() -> Any:
    with fresh_schema(postgres_url()) as url:
        yield url


def test_a_remote_server_without_tls_is_warned_about_once_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    _warn_without_tls({"host": "db.example.com"}, "postgresql://u:***@db.example.com/q")
    _warn_without_tls({"host": "db.example.com", "sslmode": "verify-full"}, "x")
    _warn_without_tls({"host": "localhost"}, "x")
    _warn_without_tls({"host": "/run/postgresql"}, "x")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "queuectl: warning: PostgreSQL at postgresql://u:***@db.example.com/q is reached without TLS; "
        "add sslmode=verify-full to the URL"
    ]


def test_a_wrong_password_is_one_line_exit_5_and_never_printed() -> None:
    parts = urlsplit(postgres_url())
    user = parts.username or "queuectl"
    wrong = urlunsplit(parts._replace(netloc=f"{user}:not-the-Secret-pw@{parts.hostname}:{parts.port}"))
    proc = subprocess.run(
        [sys.executable, "-m", "queuectl", "--db", wrong, "status"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 5, proc
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("queuectl: error: cannot use PostgreSQL at ")
    assert "not-the-Secret-pw" not in proc.stderr + proc.stdout and ":***@" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_leases_use_the_servers_clock_whatever_the_hosts_clock_says(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(pg_url)
    try:
        real = time.time
        monkeypatch.setattr(pg_module.time, "time", lambda: real() + 3600.0)  # this host steps an hour ahead
        with store.unit():
            server = store._conn.execute("SELECT extract(epoch from clock_timestamp())").fetchone()[0]
        assert abs(store.now() - float(server)) < 1.0
    finally:
        store.close()


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_the_waker_listens_again_after_its_connection_is_killed(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    waker = store.waker("w1")
    assert waker is not None
    try:
        store.notify()
        assert _readable(waker.fileno(), 5.0) and waker.drain() == b"!"
        # When the server terminates the listening connection
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'"
                " AND query LIKE %s",
                (f"%{store.channel}%",),
            ).fetchone()
        assert killed and killed[0] == 1
        # Then the waker reconnects by itself and says "look" (a notification may have been missed)
        assert _readable(waker.fileno(), 10.0) and b"!" in waker.drain()
        time.sleep(0.2)
        store.notify(stop=True)
        assert _readable(waker.fileno(), 5.0) and waker.drain() == b"s"
    finally:
        waker.close()
        store.close()


def test_a_schema_newer_than_this_queuectl_is_refused_in_one_line(pg_url: str) -> None:
    PostgresStore(pg_url).close()  # created at the current version
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM queuectl_schema").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE queuectl_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreUnavailable, match="newer than this queuectl knows"):
        open_store(pg_url)


def test_a_lost_connection_is_an_outage_then_the_next_call_reconnects(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        assert store.counts() == {}
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store._raw.info.backend_pid,))
        with pytest.raises(StoreUnavailable, match="cannot use PostgreSQL"):
            store.counts()
        assert store.counts() == {}
    finally:
        store.close()


def test_two_parents_finishing_at_once_release_their_shared_child(pg_url: str) -> None:
    # READ COMMITTED: each parent's transaction would see the other still processing and leave the
    # child waiting for good; the settling parent's lock on the child orders them
    from conftest import make_job

    from queuectl.core import lifecycle
    from queuectl.core.models import COMPLETED, PENDING, Lease, Outcome

    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        lifecycle.enqueue(first, [make_job("a"), make_job("b"), make_job("c", after=["a", "b"])])
        a, b = first.claim("w1", None, 1000.0, 60.0, limit=2)
        done = Outcome(COMPLETED, 1001.0, exit_code=0)
        finished: list[bool] = []
        other = threading.Thread(
            target=lambda: finished.append(lifecycle.finish(second, Lease(b.id, "w1", b.attempts), done))
        )
        with first.unit():  # a's outcome and its settling, not yet committed while b finishes
            assert lifecycle.finish(first, Lease(a.id, "w1", a.attempts), done)
            other.start()
            other.join(timeout=0.5)
        other.join(timeout=10)
        assert finished == [True]
        child = first.get("c")
        assert child is not None and child.state == PENDING
    finally:
        first.close()
        second.close()


def test_a_slow_reading_of_the_servers_clock_does_not_move_it(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        wall, mono = time.time(), time.monotonic()
        store.sample_clock(mono - 0.5, wall + 0.25)  # a 0.5 s round trip that says: 0.5 s ahead
        assert abs(store.now() - time.time()) < 0.05  # kept the better reading
        store._clock_at -= 60  # ...until it is old
        store.sample_clock(mono - 0.5, wall + 0.25)
        assert abs(store.now() - time.time() - 0.5) < 0.05
    finally:
        store.close()
