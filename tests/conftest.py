"""Fixtures shared by every test: a ``store`` on each backend, and ``make_job``.

``store`` is parametrised over ``sqlite`` (a file in ``tmp_path``), ``postgres`` (a real server
named by ``QUEUECTL_TEST_POSTGRES_URL``, each test on a schema of its own: see tests/pgserver.py; without
the URL the test skips, except in CI where it fails), ``mongomock`` (in memory) and ``mongodb`` (a
real server, only when ``QUEUECTL_TEST_MONGODB_URL`` is set: each test gets its own database,
dropped afterwards; otherwise the test is skipped, visibly in ``-ra`` output).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from queuectl.core.models import Job
from queuectl.store.base import Store

MONGODB_URL_ENV = "QUEUECTL_TEST_MONGODB_URL"
STORE_BACKENDS = ("sqlite", "postgres", "mongomock", "mongodb")
T0 = 1000.0  # the default enqueue time of make_job; tests pass every time explicitly


def make_job(job_id: str, command: str = "true", **fields: Any) -> Job:
    """A Job as the service would build it; ``created_at`` (default T0) also sets updated_at and run_at."""
    created = fields.setdefault("created_at", T0)
    fields.setdefault("updated_at", created)
    fields.setdefault("run_at", created)
    return Job(id=job_id, command=command, **fields)


@pytest.fixture(name="make_job")
def make_job_fixture() -> Callable[..., Job]:
    """``make_job(id, command="true", **fields)``: see :func:`make_job`."""
    return make_job


def _url_with_database(url: str, db_name: str) -> str:
    """``url`` pointing at ``db_name``; credentials keep authenticating where they did before."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "@" in parts.netloc and "authSource" not in query:
        query["authSource"] = parts.path.lstrip("/") or "admin"
    return urlunsplit((parts.scheme, parts.netloc, "/" + db_name, urlencode(query), parts.fragment))


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Store]:
    """An empty queue database on each backend; closed (and dropped, on a real server) afterwards."""
    backend = request.param
    if backend == "sqlite":
        from queuectl.store.sql.sqlite import SqliteStore

        sqlite_store = SqliteStore(str(tmp_path / "queue.db"))
        yield sqlite_store
        sqlite_store.close()
    elif backend == "postgres":
        from pgserver import fresh_schema, postgres_url

        from queuectl.store.sql.postgres import PostgresStore

        with fresh_schema(postgres_url()) as pg_url:
            pg_store = PostgresStore(pg_url)
            yield pg_store
            pg_store.close()
    elif backend == "mongomock":
        mongomock = pytest.importorskip("mongomock")
        from queuectl.store.mongo.store import MongoStore

        mock_store = MongoStore(mongomock.MongoClient(), db_name="queuectl_test")
        yield mock_store
        mock_store.close()
    elif backend == "mongodb":
        url = os.environ.get(MONGODB_URL_ENV)
        if not url:
            pytest.skip(f"{MONGODB_URL_ENV} not set: real MongoDB tests skipped")
        from queuectl.store.mongo.store import MongoStore

        db_name = f"queuectl_test_{uuid.uuid4().hex[:16]}"
        real_store = MongoStore.connect(_url_with_database(url, db_name))
        try:
            yield real_store
        finally:
            real_store._client.drop_database(db_name)  # the store exposes no drop: test-only access
            real_store.close()
    else:  # pragma: no cover - a typo in an indirect parametrisation
        raise ValueError(f"unknown store backend {backend!r}; known: {', '.join(STORE_BACKENDS)}")
