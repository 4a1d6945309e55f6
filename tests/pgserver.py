"""The real PostgreSQL server of the tests: its URL, and a fresh schema per test.

``QUEUECTL_TEST_POSTGRES_URL`` names the server (``scripts/pg_test_server.sh start DIR`` starts a
private one and prints it). Without it the PostgreSQL tests skip, visibly in ``-ra`` output, except
in CI (``CI=true``), where a missing server is a failure: CI always starts one (``.ci/run``), so a
skip there would hide that nothing was tested. ``QUEUECTL_TEST_POSTGRES_DIR`` (the script's folder)
lets the fault tests restart the server.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator
from urllib.parse import quote

import pytest

POSTGRES_URL_ENV = "QUEUECTL_TEST_POSTGRES_URL"
POSTGRES_DIR_ENV = "QUEUECTL_TEST_POSTGRES_DIR"


def postgres_url() -> str:
    """The test server's URL; skips the test without one (fails it in CI)."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        return url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{POSTGRES_URL_ENV} is not set in CI (.ci/run starts a server)", pytrace=False)
    pytest.skip(f"{POSTGRES_URL_ENV} not set: real PostgreSQL tests skipped (scripts/pg_test_server.sh)")


def with_schema(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (through libpq's ``options``)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A URL on a new, empty schema of the server, dropped with everything in it afterwards."""
    import psycopg

    schema = f"queuectl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
