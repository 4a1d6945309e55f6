"""Findings 5, 6 and 13: what a connection promises (majority writes and reads, bounded waits),
and how MongoDB's errors reach the user (one line, the right exit code, retried only if a
retry can help)."""

from __future__ import annotations

from typing import Any

import pymongo
import pymongo.errors as perr
import pytest

from queuectl.core.config import RuntimeConfig
from queuectl.core.errors import (
    EXIT_READ_ONLY,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    QueuectlError,
    StoreReadOnly,
    StoreUnavailable,
)
from queuectl.store.mongo import client as mongo_client
from queuectl.store.mongo.errors import _mongo_error


class FakeClient:
    """Records the options a MongoClient was given; answers ``ping``."""

    made: list[dict[str, Any]] = []

    def __init__(self, url: str, **options: Any) -> None:
        FakeClient.made.append(options)
        self.admin = self

    def command(self, name: str) -> dict[str, Any]:
        return {"ok": 1}

    def close(self) -> None:
        pass


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.made = []
    monkeypatch.setattr(pymongo, "MongoClient", FakeClient)
    return FakeClient


def test_a_connection_asks_for_majority_and_bounded_waits(fake_client: type[FakeClient]) -> None:
    mongo_client.open_client("mongodb://localhost/q")
    [options] = fake_client.made
    assert options["w"] == "majority" and options["readConcernLevel"] == "majority"  # finding 5
    assert 0 < options["wTimeoutMS"] < options["socketTimeoutMS"]
    # finding 6: a stalled server fails a call well before a heartbeat interval has passed
    assert options["socketTimeoutMS"] / 1000 < RuntimeConfig().heartbeat


def test_options_the_url_sets_are_its_own(fake_client: type[FakeClient]) -> None:
    mongo_client.open_client("mongodb://localhost/q?w=1&socketTimeoutMS=9000")
    [options] = fake_client.made
    assert "w" not in options and "socketTimeoutMS" not in options and options["readConcernLevel"] == "majority"


class Store:
    url = "mongodb://u:pw@db"
    safe_url = "mongodb://u:***@db"


def failure(code: int, message: str = "boom", labels: list[str] | None = None) -> perr.OperationFailure:
    return perr.OperationFailure(message, code, {"code": code, "errmsg": message, "errorLabels": labels or []})


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (failure(18, "Authentication failed."), StoreUnavailable, "refused the credentials"),
        (failure(13, "not authorized on q to execute command createIndexes"), QueuectlError, "not authorized"),
        (failure(14031, "Out of disk space"), StoreReadOnly, "refuses writes"),
        (failure(8000, "you are over your space quota, using 513 MB of 512 MB"), StoreReadOnly, "quota"),
        (failure(12, "UnsupportedFormat"), QueuectlError, "refused the request"),
        (failure(2, "BadValue: unknown operator"), QueuectlError, "refused the request"),
        (failure(189, "PrimarySteppedDown"), StoreUnavailable, "PrimarySteppedDown"),
        (failure(1, "x", labels=["RetryableWriteError"]), StoreUnavailable, "x"),
        (perr.AutoReconnect("connection closed"), StoreUnavailable, "cannot reach"),
        (perr.DocumentTooLarge("BSON document too large (17000000 bytes)"), QueuectlError, "16 MiB"),
    ],
)
def test_errors_are_translated_by_what_a_retry_can_do(exc: Exception, kind: type[Exception], text: str) -> None:
    mapped = _mongo_error(Store(), exc)
    assert type(mapped) is kind and text in str(mapped)
    assert "u:" not in str(mapped) or "***" in str(mapped)
    if kind is QueuectlError:
        assert not isinstance(mapped, (StoreUnavailable, StoreReadOnly))  # a worker does not retry it forever
    if kind is StoreReadOnly:
        assert isinstance(mapped, StoreReadOnly) and mapped.exit_code == EXIT_READ_ONLY


def test_a_dns_failure_of_an_srv_url_is_an_outage_not_a_bad_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import pymongo.uri_parser

    def no_dns(url: str, *args: Any, **kwargs: Any) -> Any:
        raise perr.ConfigurationError("The DNS query name does not exist: _mongodb._tcp.cluster0.example.net.")

    monkeypatch.setattr(pymongo.uri_parser, "parse_uri", no_dns)
    with pytest.raises(StoreUnavailable) as caught:
        mongo_client.open_client("mongodb+srv://u:secret@cluster0.example.net/q")
    assert caught.value.exit_code == EXIT_UNAVAILABLE and "secret" not in str(caught.value)

    monkeypatch.undo()
    with pytest.raises(QueuectlError) as bad:
        mongo_client.open_client("mongodb://u:secret@host:notaport/q")
    assert bad.value.exit_code == EXIT_USAGE and "secret" not in str(bad.value)
