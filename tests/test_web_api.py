"""The HTTP API in-process on every store backend (SQLite file, mongomock, MongoDB when set):
the same requests and answers as against a real ``serve`` process (tests/integration/
test_http_api.py), plus the token service, the change feed behind ``/api/events`` and the
rule that only ``serve`` imports the web stack."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import httpx
import pytest
import uvicorn

from queuectl.core.errors import InvalidInput, NotFound
from queuectl.service import changes, tokens
from queuectl.service import jobs as job_service
from queuectl.store.base import Store
from queuectl.web.app import create_app
from queuectl.web.http import Settings


@pytest.fixture(name="api")
def api_fixture(store: Store) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """The app on uvicorn in a thread of this process, over the test's store (mongomock lives
    in this process only), and a token per scope set."""
    secrets = {
        name: tokens.create_token(store, scopes, name)[1]
        for name, scopes in {"read": ("read",), "control": ("read", "control"), "all": tokens.SCOPES}.items()
    }
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(Settings(store.url, opener=lambda: store))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=20) as client:
            yield client, secrets
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_enqueue_read_cancel_and_page_on_every_backend(api: tuple[httpx.Client, dict[str, str]], store: Store) -> None:
    client, secrets = api
    auth = bearer(secrets["all"])
    assert client.get("/api/jobs").status_code == 401
    assert client.post("/api/jobs", json={"command": "true"}, headers=bearer(secrets["read"])).status_code == 403
    made = client.post(
        "/api/jobs:batch", json=[{"command": f"echo {n}", "env": {"K": "v"}} for n in range(25)], headers=auth
    )
    assert made.status_code == 202 and made.json()["count"] == 25
    ids = made.json()["ids"]
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 10, "count": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/jobs", params=query, headers=auth)
        body = page.json()
        assert body["matched"] == 25 and all(job["env"] == {"K": "***"} for job in body["jobs"])
        seen += [job["id"] for job in body["jobs"]]
        if not (cursor := body["next_cursor"]):
            break
    assert seen == ids[::-1]
    one = client.post("/api/jobs", json={"command": "sleep 9", "id": "mine"}, headers=auth)
    assert one.status_code == 202 and one.headers["location"] == "/api/jobs/mine"
    assert client.post("/api/jobs", json={"command": "true", "id": "mine"}, headers=auth).status_code == 409
    assert client.post("/api/jobs/mine/cancel", headers=bearer(secrets["read"])).status_code == 403
    assert client.post("/api/jobs/mine/cancel", headers=bearer(secrets["control"])).json()["state"] == "cancelled"
    assert client.post("/api/jobs/mine/cancel", headers=auth).status_code == 409  # finished already
    assert client.get("/api/jobs/gone", headers=auth).status_code == 404
    assert store.get("mine").state == "cancelled"  # type: ignore[union-attr]
    assert client.get("/api/status", headers=auth).json()["states"]["pending"] == 25
    assert client.get("/readyz", headers=auth).json()["ready"] is True


def test_a_token_is_kept_only_as_a_hash_and_revoked_by_name(store: Store) -> None:
    record, secret = tokens.create_token(store, ("read", "enqueue"), "ci")
    assert secret.startswith(f"qct_{record.id}_") and len(secret) > 50
    rows = store.registry_list("tokens")
    assert len(rows) == 1 and secret not in str(rows) and rows[0]["scopes"] == "read,enqueue"
    assert tokens.authenticate(store, secret) == record
    assert tokens.authenticate(store, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert tokens.authenticate(store, "qct_nothing") is None and tokens.authenticate(store, "") is None
    with pytest.raises(InvalidInput, match="unknown scope 'admin'"):
        tokens.parse_scopes("read,admin")
    with pytest.raises(InvalidInput, match="at least one"):
        tokens.parse_scopes(" , ")
    with pytest.raises(InvalidInput, match="token name"):
        tokens.create_token(store, ("read",), "has space")
    assert tokens.revoke_token(store, "ci") == record
    assert tokens.authenticate(store, secret) is None
    with pytest.raises(NotFound):
        tokens.revoke_token(store, "ci")


def test_the_change_feed_reports_each_change_once_in_order(store: Store) -> None:
    first = job_service.enqueue(store, [{"command": "true"}, {"command": "true"}])
    start = store.get(first[0]).updated_at - 1  # type: ignore[union-attr]
    changed, cursor = changes.changes(store, changes.Cursor(start))
    assert [(job.id, job.state) for job in changed] == [(first[0], "pending"), (first[1], "pending")]
    assert changes.changes(store, cursor) == ([], cursor)  # nothing new: nothing again
    job_service.cancel(store, first[0])
    changed, cursor = changes.changes(store, cursor)
    assert [(job.id, job.state) for job in changed] == [(first[0], "cancelled")]
    assert changes.changes(store, changes.Cursor.decode(cursor.encode()))[0][-1].state == "cancelled"  # resumable
    with pytest.raises(InvalidInput, match="bad event cursor"):
        changes.Cursor.decode("yesterday")


def test_only_serve_imports_the_web_stack() -> None:
    web = "('starlette', 'uvicorn', 'httpx')"
    code = f"import sys, queuectl.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {web}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_changed_since_reads_an_index_on_sqlite(tmp_path: Any) -> None:
    from queuectl.store.sql.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "q.db"))
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'pending' AND updated_at >= 0 ORDER BY updated_at LIMIT 5"
    ).fetchall()
    store.close()
    assert any("jobs_updated" in str(row) for row in plan) and not any("SCAN jobs" in str(row) for row in plan)


def test_status_and_workers_show_an_autoscaling_range_on_every_backend(
    api: tuple[httpx.Client, dict[str, str]], store: Store
) -> None:
    """Issue 15: the range of a ``--count MIN..MAX`` supervisor, as its workers' rows carry it."""
    from queuectl.core.models import WorkerInfo
    from queuectl.service import workers as registry

    client, secrets = api
    now = store.now()
    for n in range(2):
        registry.register_worker(store, WorkerInfo(f"w{n}", "vm", 100 + n, "running", now, now, scale="1..4"))
    registry.register_worker(store, WorkerInfo("fixed", "vm", 200, "running", now, now))
    auth = bearer(secrets["read"])
    status = client.get("/api/status", headers=auth).json()
    assert status["workers"]["autoscaling"] == [{"host": "vm", "scale": "1..4", "alive": 2}]
    assert {w["id"]: w["scale"] for w in client.get("/api/workers", headers=auth).json()} == {
        "w0": "1..4",
        "w1": "1..4",
        "fixed": "",
    }
