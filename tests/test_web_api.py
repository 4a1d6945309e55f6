"""The HTTP API in-process on every store backend (SQLite file, mongomock, MongoDB when set):
the same requests and answers as against a real ``serve`` process (tests/integration/
test_http_api.py), plus the token service, the event stream's resume by ``Last-Event-ID`` and the rule that only
``serve`` imports the web stack."""

from __future__ import annotations

import json
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
from queuectl.service import tokens
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


def read_sse(client: httpx.Client, headers: dict[str, str], count: int, **params: str) -> list[dict[str, Any]]:
    """The first ``count`` events of ``GET /api/events`` (each its ``id``, ``event`` and JSON
    ``data``), then the stream is closed as a client going away would."""
    found: list[dict[str, Any]] = []
    with client.stream("GET", "/api/events", headers=headers, params=params, timeout=20) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        message: dict[str, Any] = {}
        for line in response.iter_lines():
            if line.startswith(("id: ", "event: ")):
                key, _, value = line.partition(": ")
                message[key] = value
            elif line.startswith("data: "):
                message["data"] = json.loads(line[6:])
            elif not line and "data" in message:
                found.append(message)
                message = {}
                if len(found) == count:
                    break
    return found


def test_the_event_stream_resumes_from_last_event_id_without_a_gap_or_a_repeat(
    api: tuple[httpx.Client, dict[str, str]], store: Store
) -> None:
    client, secrets = api
    auth = bearer(secrets["all"])
    first = client.post("/api/jobs:batch", json=[{"command": "true"}] * 3, headers=auth).json()["ids"]
    seen = read_sse(client, auth, 3, since="0")
    assert [(m["event"], m["data"]["kind"], m["data"]["job_id"]) for m in seen] == [
        ("job", "enqueued", job_id) for job_id in first
    ]
    assert all(m["id"] == str(m["data"]["seq"]) for m in seen)
    last = seen[-1]["id"]
    for job_id in first[:2]:  # while the client is away
        client.post(f"/api/jobs/{job_id}/cancel", headers=auth)
    later = client.post("/api/jobs:batch", json=[{"command": "true"}] * 5, headers=auth).json()["ids"]
    resumed = read_sse(client, {**auth, "Last-Event-ID": last}, 7)
    logged = store.read_events(int(last), 100)
    assert [m["data"] for m in resumed] == [event.to_dict() for event in logged]  # every later one, once, in order
    assert [(m["data"]["kind"], m["data"]["job_id"]) for m in resumed] == [
        *[("cancelled", job_id) for job_id in first[:2]],
        *[("enqueued", job_id) for job_id in later],
    ]
    one = read_sse(client, auth, 2, since="0", job=first[0])  # the filters of `queuectl events`
    assert [m["data"]["kind"] for m in one] == ["enqueued", "cancelled"]
    for bad_id in ("yesterday", "1796141929.5", "-1", "99999999999999999999", "9223372036854775808"):
        bad = client.get("/api/events", headers={**auth, "Last-Event-ID": bad_id})
        assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["error"]


def test_label_filters_restart_hold_and_snooze_code_over_http(
    api: tuple[httpx.Client, dict[str, str]], store: Store
) -> None:
    client, secrets = api
    auth = bearer(secrets["all"])
    specs = [
        {"id": "web1", "command": "true", "labels": {"team": "web", "env": "prod"}},
        {"id": "web2", "command": "true", "labels": ["team=web"]},
        {"id": "db1", "command": "true", "labels": {"team": "db"}, "snooze_code": 75, "snooze_delay": "5s"},
    ]
    assert client.post("/api/jobs:batch", json=specs, headers=auth).status_code == 202

    def listed(*labels: str) -> list[str]:
        page = client.get("/api/jobs", params=[("label", label) for label in labels], headers=auth)
        assert page.status_code == 200, page.text
        return sorted(job["id"] for job in page.json()["jobs"])

    assert listed("team=web") == ["web1", "web2"]
    assert listed("team=web", "env=prod") == ["web1"]  # every label given must match, as --label
    assert listed("team=ops") == []
    assert client.get("/api/jobs", params={"label": "no-equals"}, headers=auth).status_code == 422
    assert client.get("/api/jobs/db1", headers=auth).json()["retry"] == {"snooze_code": 75, "snooze_delay": 5.0}
    assert client.post("/api/jobs/web2/hold", headers=bearer(secrets["read"])).status_code == 403
    assert client.post("/api/jobs/web2/hold", headers=auth).json()["state"] == "held"
    assert client.post("/api/jobs/web2/release", headers=auth).json()["state"] == "pending"
    assert client.post("/api/jobs/web1/restart", headers=auth).status_code == 409  # not finished yet
    client.post("/api/jobs/web1/cancel", headers=auth)
    again = client.post("/api/jobs/web1/restart", json={"command": "echo again", "priority": 3}, headers=auth)
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("id", "state", "command", "priority")} == {
        "id": "web1",
        "state": "pending",
        "command": "echo again",
        "priority": 3,
    }
    assert client.post("/api/jobs/web1/restart", headers=auth).status_code == 409  # pending again
    assert client.post("/api/jobs/web1/restart", json={"env": {}}, headers=auth).status_code == 422


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


def test_only_serve_imports_the_web_stack() -> None:
    web = "('starlette', 'uvicorn', 'httpx')"
    code = f"import sys, queuectl.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in {web}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


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


def test_queues_show_their_limit_and_rate_as_queue_list_json_does(
    api: tuple[httpx.Client, dict[str, str]], store: Store
) -> None:
    """Before: /api/queues and a pause's answer left out the limit and the rate that ``queue list
    --json`` shows, so a dashboard could not tell a throttled queue from an idle one."""
    from queuectl.service import queues

    client, secrets = api
    queues.set_limit(store, "builds", 2)
    queues.set_rate(store, "builds", "10/m")
    listed = client.get("/api/queues", headers=bearer(secrets["read"])).json()
    builds = next(row for row in listed if row["name"] == "builds")
    assert (builds["limit"], builds["rate"], builds["paused"]) == (2, "10/m", False)
    paused = client.post("/api/queues/builds/pause", headers=bearer(secrets["control"])).json()
    assert (paused["limit"], paused["rate"], paused["paused"]) == (2, "10/m", True)


def test_logs_take_head_and_tail_as_the_cli_does(api: tuple[httpx.Client, dict[str, str]], store: Store) -> None:
    """Before: /api/jobs/{id}/logs gave the whole tail only; a client wanting the last lines of
    a long output had to fetch all of it (``logs --tail`` and ``--head`` had no HTTP form)."""
    from queuectl.core import lifecycle
    from queuectl.core.models import COMPLETED, Lease, Outcome

    client, secrets = api
    auth = bearer(secrets["read"])
    job_id = client.post("/api/jobs", json={"command": "seq 5"}, headers=bearer(secrets["all"])).json()["id"]
    (job,) = lifecycle.claim(store, "w1", None, time.time(), 30.0, 1)
    output = "".join(f"line {i}\n" for i in range(1, 6))
    assert lifecycle.finish(store, Lease(job_id, "w1", job.attempts), Outcome(COMPLETED, time.time(), output=output))
    url = f"/api/jobs/{job_id}/logs"
    whole = client.get(url, headers=auth)
    assert whole.text == output and whole.headers["X-Output-Dropped"] == "0"
    assert client.get(url, params={"tail": "2"}, headers=auth).text == "line 4\nline 5\n"
    assert client.get(url, params={"head": "1"}, headers=auth).text == "line 1\n"
    assert client.get(url, params={"tail": "0"}, headers=auth).text == ""
    with client.stream("GET", url, params={"follow": "1", "tail": "1"}, headers=auth) as followed:
        assert followed.status_code == 200 and followed.read().decode() == "line 5\n"  # a finished job: then it ends
    for params, said in (
        ({"head": "1", "tail": "1"}, "not both"),
        ({"tail": "x"}, "whole number"),
        ({"tail": "-1"}, "0 to"),
        ({"follow": "1", "head": "2"}, "cannot be combined with follow"),
    ):
        refused = client.get(url, params=params, headers=auth)
        assert refused.status_code == 400 and said in refused.json()["error"], (params, refused.text)


def test_logs_follow_with_tail_leaves_the_dropped_marker_out_and_odd_follow_values_are_refused(
    api: tuple[httpx.Client, dict[str, str]], store: Store
) -> None:
    """Found by review: ``?follow=1&tail=N`` counted the "[... N earlier bytes ...]" marker as one
    of the N lines (plain ``?tail=N`` leaves it out), and ``?follow=TRUE&head=1`` was served as a
    snapshot instead of a stream or a 400."""
    from queuectl.core import lifecycle
    from queuectl.core.models import COMPLETED, Lease, Outcome

    client, secrets = api
    auth = bearer(secrets["read"])
    job_id = client.post("/api/jobs", json={"command": "true"}, headers=bearer(secrets["all"])).json()["id"]
    (job,) = lifecycle.claim(store, "w1", None, time.time(), 30.0, 1)
    output = "[... 123 earlier bytes of output dropped ...]\na\nb\n"
    assert lifecycle.finish(store, Lease(job_id, "w1", job.attempts), Outcome(COMPLETED, time.time(), output=output))
    url = f"/api/jobs/{job_id}/logs"
    plain = client.get(url, params={"tail": "3"}, headers=auth)
    assert plain.text == "a\nb\n" and plain.headers["X-Output-Dropped"] == "123"
    with client.stream("GET", url, params={"follow": "TRUE", "tail": "3"}, headers=auth) as followed:
        assert followed.read().decode() == "a\nb\n"
    for follow in ("True", "yes"):
        refused = client.get(url, params={"follow": follow, "head": "1"}, headers=auth)
        assert refused.status_code == 400, (follow, refused.text)


def test_a_followed_log_stream_stops_its_thread_when_the_client_goes_away(
    api: tuple[httpx.Client, dict[str, str]], store: Store
) -> None:
    """Each ``logs?follow=1`` stream runs ``logs --follow``'s loop in a thread of its own: a client
    that leaves before the job ends must not leave that thread polling the store for ever."""
    import threading

    from queuectl.core import lifecycle

    client, secrets = api
    job_id = client.post("/api/jobs", json={"command": "sleep 60"}, headers=bearer(secrets["all"])).json()["id"]
    lifecycle.claim(store, "w1", None, time.time(), 300.0, 1)  # running (on no host here): no end in sight

    def followers() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name == f"follow {job_id}"]

    with client.stream("GET", f"/api/jobs/{job_id}/logs", params={"follow": "1"}, headers=bearer(secrets["read"])):
        deadline = time.monotonic() + 5
        while not followers():
            assert time.monotonic() < deadline, "no follower thread started"
            time.sleep(0.02)
    deadline = time.monotonic() + 5  # the client left: within the next short wait (0.5 s)
    while followers():
        assert time.monotonic() < deadline, "the follower thread outlived its client"
        time.sleep(0.05)


def test_a_follower_waits_for_a_slow_client_instead_of_buffering_without_bound() -> None:
    """A live follow hands out all a job writes: a client that reads nothing must hold its
    follower back at ``size`` parts (as a slow terminal holds ``logs --follow``), and a follower
    so held must stop once the client is gone."""
    import asyncio
    import threading

    from queuectl.web.streams import Handoff, _ClientGone

    loop = asyncio.new_event_loop()
    running = threading.Thread(target=loop.run_forever, daemon=True)
    running.start()
    handoff = Handoff(loop, size=4)
    handed: list[int] = []
    outcome: list[str] = []

    def follower() -> None:
        try:
            for n in range(100):
                handoff.put(b"x" * 1000)
                handed.append(n)
        except _ClientGone:
            outcome.append("stopped")

    thread = threading.Thread(target=follower, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        assert len(handed) == 4 and thread.is_alive()  # held back at the bound, nothing lost
        assert asyncio.run_coroutine_threadsafe(handoff.get(), loop).result(5) == b"x" * 1000
        time.sleep(0.3)
        assert len(handed) == 5  # one read, one more handed
        handoff.gone.set()  # the client went away
        thread.join(5)
        assert not thread.is_alive() and outcome == ["stopped"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        running.join(5)
        loop.close()


def test_a_waiting_job_has_its_waits_for_in_the_api_too(
    api: tuple[httpx.Client, dict[str, str]], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA: ``list --json`` had ``waits_for``, ``GET /api/jobs`` and ``/api/jobs/{id}`` did not;
    a page reads its parents' states once, not once per job."""
    client, secrets = api
    auth = bearer(secrets["read"])
    client.post("/api/jobs", json={"command": "sleep 1", "id": "par"}, headers=bearer(secrets["all"]))
    for n in range(3):
        made = client.post(
            "/api/jobs",
            json={"command": "true", "id": f"chi{n}", "after": ["par"]},
            headers=bearer(secrets["all"]),
        )
        assert made.status_code == 202, made.text
    reads: list[list[str]] = []
    real = store.job_states

    def counted(ids: list[str]) -> dict[str, str]:
        reads.append(ids)
        return real(ids)

    monkeypatch.setattr(store, "job_states", counted)
    page = {job["id"]: job for job in client.get("/api/jobs", headers=auth).json()["jobs"]}
    assert len(reads) == 1
    assert all(page[f"chi{n}"]["waits_for"] == ["par"] for n in range(3)) and "waits_for" not in page["par"]
    one = client.get("/api/jobs/chi0", headers=auth).json()
    assert one["waits_for"] == ["par"]
    assert {key: value for key, value in one.items() if key not in ("output", "history")} == page["chi0"]
