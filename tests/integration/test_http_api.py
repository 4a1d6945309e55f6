"""The HTTP API against a real ``queuectl serve`` process on a real SQLite file: auth, scopes,
every error status, the CLI's JSON shapes, pagination over 10,000 jobs, following a running
job's output and the event stream of a job's states."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

import httpx
import pytest

from queuectl.service import tokens

from .conftest import Queue, wait_until
from .serving import Server, json_of, serving

READS = [
    *("/api/jobs", "/api/dlq", "/api/status", "/api/dashboard", "/api/queues", "/api/workers", "/api/schedules"),
    *("/api/events", "/readyz", "/metrics", "/openapi.json", "/api/session", "/api/jobs/x", "/api/jobs/x/logs"),
]
WRITES = [
    *("/api/jobs", "/api/jobs:batch", "/api/jobs/x/cancel", "/api/jobs/x/retry", "/api/dlq/retry"),
    *("/api/queues/q/pause", "/api/queues/q/resume", "/api/workers/stop"),
]


@pytest.fixture(name="server")
def server_fixture(queue: Queue) -> Iterator[Server]:
    yield from serving(queue)


def enqueue(client: httpx.Client, **spec: Any) -> dict[str, Any]:
    response = client.post("/api/jobs", json=spec)
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_only_healthz_answers_without_a_token(server: Server) -> None:
    with server.client(None) as anonymous:
        assert anonymous.get("/healthz").json() == {"ok": True}
        for path in READS:
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert json_of(response)["status"] == 401 and response.headers["www-authenticate"] == "Bearer"
        for path in WRITES:
            assert anonymous.post(path, json={"command": "true"}).status_code == 401, path
        assert anonymous.get("/api/jobs", headers={"Authorization": "Basic dTpw"}).status_code == 401
    with server.client("qct_000000000000_" + "x" * 43) as wrong:
        assert "not valid" in json_of(wrong.get("/api/jobs"))["error"]
    assert server.queue.state("nothing") is None and server.queue.counts() == {}  # nothing was written


def test_a_revoked_token_is_refused_at_its_next_request(server: Server) -> None:
    secret = tokens.create_token(server.queue.store, ("read",), "soon-gone")[1]
    with server.client(secret) as client:
        assert client.get("/api/status").status_code == 200
        server.queue.cli("token", "revoke", "soon-gone")
        assert client.get("/api/status").status_code == 401


def test_each_scope_allows_its_own_endpoints_only(server: Server) -> None:
    with server.client("enqueue") as submit:
        job = enqueue(submit, command="sleep 30")
        assert submit.get("/api/jobs").status_code == 403  # enqueue implies no read
        assert "lacks the read scope" in submit.get(f"/api/jobs/{job['id']}").json()["error"]
    with server.client("read") as read:
        assert read.get(f"/api/jobs/{job['id']}").status_code == 200
        assert read.post("/api/jobs", json={"command": "true"}).status_code == 403  # never implied
        assert read.post(f"/api/jobs/{job['id']}/cancel").status_code == 403
        assert read.post("/api/queues/default/pause").status_code == 403
        assert read.post("/api/workers/stop").status_code == 403
        assert read.get("/api/session").json()["scopes"] == ["read"]
    assert server.queue.state(job["id"]) == "pending"
    with server.client("control") as control:
        assert control.post("/api/jobs", json={"command": "true"}).status_code == 403
        assert control.post(f"/api/jobs/{job['id']}/cancel").json()["state"] == "cancelled"


def test_jobs_have_the_cli_json_shape_and_env_values_stay_hidden(server: Server) -> None:
    with server.client("all") as client:
        response = client.post("/api/jobs", json={"command": "echo hi", "env": {"API_KEY": "s3cret"}, "queue": "q1"})
        assert response.status_code == 202
        job_id = response.json()["id"]
        assert response.json() == {"id": job_id, "state": "pending"}
        assert response.headers["location"] == f"/api/jobs/{job_id}"
        shown = client.get(response.headers["location"]).json()
        cli = server.queue.cli_json("show", job_id)
        assert shown == {**cli, "env": {"API_KEY": "***"}}
        assert "s3cret" not in client.get("/api/jobs").text and "s3cret" not in client.get(f"/api/jobs/{job_id}").text
        assert client.get(f"/api/jobs/{job_id}?env=1").json()["env"] == {"API_KEY": "s3cret"}  # control asked
        listed = client.get("/api/jobs", params={"queue": "q1", "count": "1"}).json()
        assert listed["matched"] == 1 and "output" not in listed["jobs"][0]
    with server.client("read") as read:
        assert read.get(f"/api/jobs/{job_id}?env=1").status_code == 403


def test_every_bad_request_gets_a_json_error_with_its_status(server: Server) -> None:
    store = server.queue.store
    with server.client("all") as client:

        def error(response: httpx.Response, status: int, words: str) -> None:
            assert response.status_code == status, response.text
            body = json_of(response)
            assert body["status"] == status and words in body["error"], body

        error(client.post("/api/jobs", content=b'{"command": '), 400, "not valid JSON")
        error(client.post("/api/jobs", json=["echo"]), 400, "one JSON object")
        error(client.get("/api/jobs", params={"limit": "lots"}), 400, "whole number")
        error(client.get("/api/jobs", params={"limit": "100000"}), 400, "1 to 1000")
        error(client.get("/api/jobs", params={"cursor": "%%%"}), 400, "bad cursor")
        error(client.get("/api/jobs", params={"env": "maybe"}), 400, "0 or 1")
        error(client.get("/api/jobs/nope"), 404, "no job with id 'nope'")
        error(client.post("/api/jobs/nope/cancel"), 404, "no job")
        error(client.get("/api/nothing"), 404, "no such endpoint")
        error(client.post("/api/queues/nosuch/pause"), 404, "?create=1 pauses it")
        error(client.delete("/api/jobs"), 405, "not allowed")
        enqueue(client, command="true", id="job-1", unique_key="nightly")
        error(client.post("/api/jobs", json={"command": "true", "id": "job-1"}), 409, "already exists")
        error(client.post("/api/jobs", json={"command": "true", "unique_key": "nightly"}), 409, "unique key")
        error(client.post("/api/jobs/job-1/retry"), 409, "not in the dead letter queue")
        error(client.post("/api/jobs", json={"command": "x" * 70_000}), 413, "over the limit")
        error(client.post("/api/jobs", json={"command": ""}), 422, "empty command")
        error(client.post("/api/jobs", json={"command": "true", "priority": "high"}), 422, "priority")
        error(client.get("/api/jobs", params={"state": "sleeping"}), 422, "sleeping")
        # observed: 200, and an ASGI exception (OverflowError) in the server's log
        huge = "99999999999999999999"
        error(client.get("/api/events", params={"since": huge}, timeout=10), 422, huge)
        error(client.get("/api/events", headers={"Last-Event-ID": huge}, timeout=10), 422, "Last-Event-ID")
        # a batch is all or nothing: a bad line, a duplicate id, a bad job each leave nothing behind
        before = server.queue.counts()
        error(client.post("/api/jobs:batch", content=b'{"command": "true"}\n{"command": '), 400, "line 2")
        error(client.post("/api/jobs:batch", json=[{"command": "true"}, {"command": "true", "id": "job-1"}]), 409, "")
        error(client.post("/api/jobs:batch", json=[{"command": "true"}, {"command": ""}]), 422, "empty command")
        error(client.post("/api/jobs:batch", json=[]), 422, "no jobs")
        error(client.post("/api/jobs:batch", json=[1, 2]), 400, "array of job objects")
        assert server.queue.counts() == before and store.get("job-1") is not None
        assert "Traceback" not in server.log.read_text()


def test_batches_enqueue_ndjson_and_arrays(server: Server) -> None:
    with server.client("all") as client:
        ndjson = "".join(json.dumps({"command": f"echo {n}", "queue": "batch"}) + "\n" for n in range(50))
        response = client.post("/api/jobs:batch", content=ndjson, headers={"Content-Type": "application/x-ndjson"})
        assert response.status_code == 202 and response.json()["count"] == 50
        response = client.post("/api/jobs:batch", json=[{"command": "true", "queue": "batch"}] * 5)
        assert response.json()["count"] == 5 and len(set(response.json()["ids"])) == 5
        assert client.get("/api/queues").json()[0] == {
            "name": "batch", "paused": False, "total": 55,
            "states": {"pending": 55, "waiting": 0, "held": 0, "processing": 0, "completed": 0, "failed": 0,
                       "dead": 0, "cancelled": 0},
        }  # fmt: skip


def test_pages_walk_10000_jobs_by_cursor_and_are_never_unbounded(server: Server) -> None:
    with server.client("all") as client:
        ids: list[str] = []
        for _ in range(5):
            ndjson = "".join('{"command": "true"}\n' for _ in range(2000))
            ids += client.post("/api/jobs:batch", content=ndjson).json()["ids"]
        assert client.get("/api/jobs", params={"count": "1"}).json()["matched"] == 10_000
        default = client.get("/api/jobs").json()
        assert len(default["jobs"]) == 50 and default["matched"] is None  # the default page, not counted
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": "1000", "state": "pending", **({"cursor": cursor} if cursor else {})}
            started = time.perf_counter()
            page = client.get("/api/jobs", params=params).json()
            assert time.perf_counter() - started < 5
            pages += 1
            seen += [job["id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 10 and seen == ids[::-1]  # newest first, each job once


def follow_running(
    server: Server, client: httpx.Client, command: str
) -> tuple[dict[str, Any], str, list[tuple[float, str]]]:
    """Enqueue ``command``, start workers, and follow its logs once it runs until the stream
    ends: the job, the stream's content type and each part with the time it came."""
    job = enqueue(client, command=command)
    server.queue.start_workers()
    server.queue.wait_state(job["id"], "processing", 15)
    chunks: list[tuple[float, str]] = []
    with client.stream("GET", f"/api/jobs/{job['id']}/logs", params={"follow": "1"}) as response:
        assert response.status_code == 200
        for text in response.iter_text():
            chunks.append((time.monotonic(), text))
    return job, response.headers["content-type"], chunks


def test_logs_follow_streams_a_running_jobs_output_until_it_ends(server: Server) -> None:
    server.queue.config(heartbeat=0.5)  # a running job saves its output at each heartbeat
    with server.client("all") as client:
        job, content_type, chunks = follow_running(server, client, "for i in 1 2 3; do echo line $i; sleep 0.8; done")
        assert content_type.startswith("text/plain")
        assert "".join(text for _, text in chunks) == "line 1\nline 2\nline 3\n"
        assert len(chunks) >= 2 and chunks[-1][0] - chunks[0][0] > 0.5  # it came as it was printed
        assert server.queue.state(job["id"]) == "completed"  # and the stream ended with the job
        assert client.get(f"/api/jobs/{job['id']}/logs").text == "line 1\nline 2\nline 3\n"


def test_logs_follow_reads_a_job_running_on_this_host_live_not_at_each_heartbeat(server: Server) -> None:
    """Before: the stream read the stored output, which a running job saves at each heartbeat,
    so with the default 5 s (30 s here) every line came that late. Now, as ``logs --follow``,
    it reads the worker's spool on this host: each line within a fraction of a second."""
    server.queue.config(lease=60, heartbeat=30)  # the lease first: a heartbeat is at most half of it
    with server.client("all") as client:
        job, _, chunks = follow_running(server, client, "for i in 1 2 3; do echo line $i; sleep 0.7; done")
        assert "".join(text for _, text in chunks) == "line 1\nline 2\nline 3\n"
        arrivals = [at for at, text in chunks if text.strip()]
        assert len(arrivals) >= 2 and arrivals[-1] - arrivals[0] > 0.8  # as printed, 0.7 s apart
        assert server.queue.state(job["id"]) == "completed"


def test_the_event_stream_sees_a_job_go_pending_processing_completed(server: Server) -> None:
    seen: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        with server.client("read") as client, client.stream("GET", "/api/events", timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            ready.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["state"] == "completed":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    with server.client("all") as client:
        job = enqueue(client, command="sleep 1.5")
        server.queue.start_workers()
    listener.join(30)
    mine = [(event["kind"], event["state"]) for event in seen if event["job_id"] == job["id"]]
    assert mine == [("enqueued", "pending"), ("claimed", "processing"), ("completed", "completed")], seen


def test_queues_workers_schedules_status_and_probes(server: Server) -> None:
    queue = server.queue
    with server.client("all") as client:
        enqueue(client, command="true", queue="builds")
        assert client.post("/api/queues/builds/pause").json()["paused"] is True
        assert queue.cli_json("queue", "list")[0]["paused"] is True  # the same registry as the CLI
        assert client.post("/api/queues/new-one/pause", params={"create": "1"}).json()["paused"] is True
        assert client.post("/api/queues/builds/resume").json() == {
            **client.get("/api/queues").json()[0], "paused": False
        }  # fmt: skip
        status = client.get("/api/status").json()
        assert status["states"]["pending"] == 1 and status["overload"]["overloaded"] is False
        assert {k: v for k, v in status.items() if k != "overload"} == queue.cli_json("status")
        assert client.get("/readyz").json()["ready"] is True
        queue.cli("schedule", "add", "nightly", "0 3 * * *", "echo backup")
        assert [s["name"] for s in client.get("/api/schedules").json()] == ["nightly"]
        queue.start_workers()
        workers = client.get("/api/workers").json()
        assert len(workers) == 1 and workers[0]["state"] == "running" and workers[0]["alive"] is True
        assert client.post("/api/workers/stop", json={"ids": workers[0]["id"]}).status_code == 422
        assert client.post("/api/workers/stop", json={}).json() == {"asked": 1}
        wait_until(lambda: not queue.running_workers(), 15, message="the worker stopped")
        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        names = {line.split()[2] for line in metrics.text.splitlines() if line.startswith("# TYPE")}
        assert names == {
            line.split()[2] for line in queue.cli("metrics").stdout.splitlines() if line.startswith("# TYPE")
        }
        schema = client.get("/openapi.json").json()
        assert "/api/jobs:batch" in schema["paths"] and schema["paths"]["/healthz"]["get"].get("security") is None


def test_overload_shows_in_status_and_readyz(queue: Queue) -> None:
    from .serving import Server as Serving

    running = Serving(queue, "--max-depth", "2")
    try:
        with running.client("all") as client:
            for _ in range(3):
                enqueue(client, command="true")
            assert client.get("/api/status").json()["overload"]["overloaded"] is True
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["overloaded"] is True and ready.json()["depth"] == 3
    finally:
        running.stop()


def test_the_web_session_is_an_httponly_strict_cookie_with_csrf_on_writes(server: Server) -> None:
    with server.client(None) as browser:
        assert browser.post("/api/session", json={"token": "qct_bad"}).status_code == 401
        assert browser.post("/api/session", content=b"token=x").status_code == 400  # a form post is refused
        response = browser.post("/api/session", json={"token": server.tokens["control"]})
        assert response.json()["scopes"] == ["read", "control"]
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("queuectl_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/" in session
        assert not any("HttpOnly" in c for c in cookies if c.startswith("queuectl_csrf="))
        assert browser.get("/api/status").status_code == 200
        with server.client("all") as admin:
            job = enqueue(admin, command="sleep 30")
        refused = browser.post(f"/api/jobs/{job['id']}/cancel")
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
        wrong = browser.post(f"/api/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403 and server.queue.state(job["id"]) == "pending"
        csrf = browser.cookies["queuectl_csrf"]
        done = browser.post(f"/api/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200 and done.json()["state"] == "cancelled"
        page = browser.get("/")
        assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        browser.delete("/api/session")
        assert browser.get("/api/status").status_code == 401


def test_serve_refuses_a_public_address_until_tokens_exist(queue: Queue) -> None:
    refused = queue.cli("serve", "--host", "0.0.0.0", "--port", "0", check=False)
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0" in refused.stderr
    assert "Traceback" not in refused.stderr
    created = queue.cli("token", "create", "--scope", "read", "--name", "ci")
    token = created.stdout.strip()
    assert token.startswith("qct_") and "shown this once" in created.stderr
    record = queue.store.registry_list("tokens")[0]
    assert token not in json.dumps(record) and record["name"] == "ci"  # only its hash is kept
    listed = queue.cli_json("token", "list")
    assert [t["name"] for t in listed] == ["ci"] and token not in json.dumps(listed)


def test_live_log_streams_are_capped_and_a_closed_one_gives_its_place_back(queue: Queue) -> None:
    """Each live follow holds a thread of serve's for as long as its job runs: any read token
    could otherwise open them until the server runs out. Above ``--max-follows`` a follow gets a
    503 that says so (with Retry-After); the place is free again once a stream's client left."""
    server = Server(queue, "--max-follows", "1")
    try:
        with server.client("all") as client, server.client("read") as other:
            job = enqueue(client, command="sleep 30")
            server.queue.start_workers()
            server.queue.wait_state(job["id"], "processing", 15)
            url = f"/api/jobs/{job['id']}/logs"
            with client.stream("GET", url, params={"follow": "1"}) as first:
                assert first.status_code == 200
                refused = other.get(url, params={"follow": "1"})
                assert refused.status_code == 503
                assert "--max-follows" in json_of(refused)["error"] and refused.headers["retry-after"]
                assert other.get(url).status_code == 200  # a snapshot of the logs holds no place
            deadline = time.monotonic() + 10
            while True:  # the first stream's place comes back once serve sees its client gone
                with other.stream("GET", url, params={"follow": "1"}) as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "a closed stream never gave its place back"
                time.sleep(0.2)
            client.post(f"/api/jobs/{job['id']}/cancel")
    finally:
        server.stop()
