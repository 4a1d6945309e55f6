"""The JSON endpoints: each one parses the request, calls the service function the CLI calls for
the same thing, and answers with the CLI's ``--json`` shape (:mod:`queuectl.service.shapes`)."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict
from typing import Any, Mapping

from starlette.responses import JSONResponse, PlainTextResponse, Response

from queuectl.core.errors import InvalidInput, NotFound
from queuectl.core.lifecycle import CLAIMABLE
from queuectl.core.models import DEAD, Job
from queuectl.service import dashboard, deps, dlq, handling, history, observe, queues, schedules, shapes, workers
from queuectl.service import jobs as service
from queuectl.service.logtail import head_lines, split_marker, tail_lines
from queuectl.service.tokens import CONTROL
from queuectl.web.http import Call, HttpError, Settings

PAGE_DEFAULT = 50
PAGE_MAX = 1000  # a page is never unbounded: follow next_cursor for more
HIDDEN = "***"


def job_shape(
    call: Call,
    job: Job,
    with_output: bool = True,
    detail: bool = False,
    waits: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """:func:`shapes.job_json` (``detail``: with its history, as ``queuectl show``), with ``env``
    values hidden unless asked for (``?env=1``, which takes the control scope: a job's
    environment often holds its secrets). ``waits``: :func:`deps.waits_for` of a whole page,
    read once for it; without it, read for this job alone."""
    attempts = history.attempts(call.store, job.id) if detail else None
    data = shapes.job_json(
        job, with_output, attempts, waits=deps.waits_for(call.store, [job]) if waits is None else waits
    )
    if not wants_env(call) and data.get("env"):
        data["env"] = {name: HIDDEN for name in data["env"]}
    return data


def wants_env(call: Call) -> bool:
    """``?env=1``: allowed with the control scope only (checked even when no job has an env)."""
    if call.flag("env"):
        if not call.scoped(CONTROL):
            raise HttpError(403, "showing env values (env=1) takes the control scope")
        return True
    return False


def _cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(repr(job.created_at).encode()).decode().rstrip("=")


def _before(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
    except ValueError:
        raise HttpError(400, "bad cursor: pass the next_cursor of the previous page as is") from None


def _page(call: Call, states: list[str] | None) -> Response:
    limit = call.integer("limit", PAGE_DEFAULT, 1, PAGE_MAX)
    wants_env(call)
    queue, before, count = call.query("queue") or None, _before(call.query("cursor")), call.flag("count")
    labels = call.request.query_params.getlist("label")  # k=v, repeatable: jobs with every one
    page = service.list_jobs(call.store, states, queue, limit + 1, before, count=count, labels=labels)
    shown = page.jobs[:limit]
    more = len(page.jobs) > limit
    waits = deps.waits_for(call.store, shown)  # one read for the page
    return JSONResponse(
        {
            "jobs": [job_shape(call, job, with_output=False, waits=waits) for job in shown],
            "matched": page.matched if page.counted else None,  # count=1: from the per-queue totals
            "next_cursor": _cursor(shown[-1]) if more and shown else None,
        }
    )


def list_jobs(call: Call) -> Response:
    """``GET /api/jobs?state=&queue=&label=&limit=&cursor=&count=``: newest first; ``state``
    repeatable or comma-separated; ``label=k=v`` repeatable (every one must match, as the CLI's
    ``--label``); ``count=1`` adds how many match in all (a read of every queue's totals)."""
    states = [part for value in call.request.query_params.getlist("state") for part in value.split(",") if part]
    return _page(call, states or None)


def list_dead(call: Call) -> Response:
    return _page(call, [DEAD])


def get_job(call: Call) -> Response:
    return JSONResponse(job_shape(call, service.get_job(call.store, call.request.path_params["id"]), detail=True))


MAX_LOG_LINES = 1_000_000  # ?head / ?tail beyond this are a typo: a stored output is 64 KiB by default


def log_lines_asked(call: Call, follow: bool = False) -> tuple[int | None, int | None]:
    """``?head=N`` / ``?tail=N`` of a logs request, as ``logs --head/--tail`` takes them: not
    both, and no head of a followed output (it grows at the end)."""
    head = call.integer("head", 0, 0, MAX_LOG_LINES) if call.query("head") is not None else None
    tail = call.integer("tail", 0, 0, MAX_LOG_LINES) if call.query("tail") is not None else None
    if head is not None and tail is not None:
        raise HttpError(400, "give head or tail, not both")
    if head is not None and follow:
        raise HttpError(400, "head reads the start of the output: it cannot be combined with follow=1")
    return head, tail


def job_logs(call: Call) -> Response:
    """The stored output tail as text; ``?head=N`` / ``?tail=N``: its first or last N lines;
    ``X-Output-Dropped``: the bytes the output limit dropped before what is kept (``?follow=1``
    is served by :mod:`queuectl.web.streams`)."""
    head, tail = log_lines_asked(call, follow=call.flag("follow"))  # a follow value it cannot read: 400
    job = service.get_job(call.store, call.request.path_params["id"])
    dropped, text = split_marker(job.output or "")
    if head is not None:
        text = head_lines(text, head)
    elif tail is not None:
        text = tail_lines(text, tail)
    return PlainTextResponse(text, headers={"X-Job-State": job.state, "X-Output-Dropped": str(dropped)})


def _accepted(call: Call, ids: list[str]) -> list[dict[str, Any]]:
    return [{"id": job.id, "state": job.state} for job in (service.get_job(call.store, i) for i in ids)]


def enqueue(call: Call) -> Response:
    """``POST /api/jobs``: one job, the fields of ``enqueue``'s JSON form; 202 with id, state, Location."""
    spec = call.json()
    if not isinstance(spec, dict):
        raise HttpError(400, 'the body is one JSON object: {"command": "..."}')
    accepted = _accepted(call, service.enqueue(call.store, [spec]))[0]
    return JSONResponse(accepted, status_code=202, headers={"Location": f"/api/jobs/{accepted['id']}"})


def enqueue_batch(call: Call) -> Response:
    """``POST /api/jobs:batch``: a JSON array or NDJSON (one object a line), all or nothing."""
    specs = _batch_specs(call.body, call.request.headers.get("content-type", ""))
    ids = service.enqueue(call.store, specs)
    return JSONResponse({"count": len(ids), "ids": ids}, status_code=202)


def _batch_specs(body: bytes, content_type: str) -> list[dict[str, Any]]:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise HttpError(400, "the body is not UTF-8 text") from None
    if "ndjson" in content_type or "jsonlines" in content_type or not text.lstrip().startswith("["):
        specs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                specs.append(json.loads(line))
            except ValueError as exc:
                raise HttpError(400, f"line {number} is not valid JSON: {exc}; nothing was enqueued") from None
            if not isinstance(specs[-1], dict):
                raise HttpError(400, f"line {number} is not a JSON object; nothing was enqueued")
    else:
        try:
            specs = json.loads(text)
        except ValueError as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
            raise HttpError(400, "the body is a JSON array of job objects (or NDJSON)")
    if not specs:
        raise HttpError(422, "no jobs in the body")
    return specs


def cancel(call: Call) -> Response:
    return JSONResponse(job_shape(call, service.cancel(call.store, call.request.path_params["id"])))


def retry(call: Call) -> Response:
    job_id = call.request.path_params["id"]
    dlq.retry(call.store, job_id)
    return JSONResponse(job_shape(call, service.get_job(call.store, job_id)))


def restart(call: Call) -> Response:
    """``POST /api/jobs/{id}/restart`` with an optional body of edits (command, priority, queue,
    max_retries, timeout): the finished job runs again under its id, as ``queuectl restart``."""
    job_id, edits = call.request.path_params["id"], call.json()
    if not isinstance(edits, dict):
        raise HttpError(400, 'the body is a JSON object of edits: {"command": "..."}')
    handling.restart_job(call.store, job_id, edits)
    return JSONResponse(job_shape(call, service.get_job(call.store, job_id)))


def hold(call: Call) -> Response:
    handling.hold_job(call.store, call.request.path_params["id"])
    return JSONResponse(job_shape(call, service.get_job(call.store, call.request.path_params["id"])))


def release(call: Call) -> Response:
    handling.release_job(call.store, call.request.path_params["id"])
    return JSONResponse(job_shape(call, service.get_job(call.store, call.request.path_params["id"])))


def retry_all(call: Call) -> Response:
    return JSONResponse({"retried": dlq.retry(call.store, None)})


def overload(call: Call, settings: Settings, summary: observe.Status, now: float) -> dict[str, Any]:
    """Lag (the oldest due job's wait) and depth (claimable jobs) against serve's thresholds."""
    lag = observe.lag(observe.next_due(call.store, summary.queues, summary.paused), now)
    depth = sum(summary.states.get(state, 0) for state in CLAIMABLE)
    over = (lag is not None and lag > settings.max_lag) or depth > settings.max_depth
    return {
        "overloaded": over,
        "lag": None if lag is None else round(lag, 3),
        "depth": depth,
        "max_lag": settings.max_lag,
        "max_depth": settings.max_depth,
    }


def status(call: Call, settings: Settings) -> Response:
    now = time.time()
    summary = observe.status(call.store, now)
    body = shapes.status_json(summary.rows, summary.workers_alive, summary.workers_total, summary.autoscaling)
    body["overload"] = overload(call, settings, summary, now)
    return JSONResponse(body)


def dashboard_view(call: Call) -> Response:
    """What the terminal dashboard shows, as JSON (the web page's panels)."""
    snapshot = dashboard.collect(call.store)
    data = asdict(snapshot)
    data["at"] = shapes.rfc3339(snapshot.at)
    data["dlq"], data["workers_alive"] = snapshot.dlq, snapshot.workers_alive
    data["workers_unresponsive"] = snapshot.workers_unresponsive
    return JSONResponse(data)


def list_queues(call: Call) -> Response:
    return JSONResponse([shapes.queue_json(row) for row in queues.list_queues(call.store)])


def pause_queue(call: Call, paused: bool) -> Response:
    name = call.request.path_params["name"]
    try:
        queues.set_paused(call.store, name, paused, create=call.flag("create"))
    except NotFound as exc:  # the service's hint names the CLI's flag: say it as this API does
        raise NotFound(str(exc).replace("--create", "?create=1")) from None
    rows = {row.name: row for row in queues.list_queues(call.store)}  # a resumed empty queue is in no list
    return JSONResponse(shapes.queue_json(rows.get(name) or queues.QueueRow(name, paused, {})))


def list_workers(call: Call) -> Response:
    infos, config = workers.worker_list(call.store, include_stopped=call.flag("all"))
    now = time.time()
    return JSONResponse([shapes.worker_json(info, config, now) for info in infos])


def stop_workers(call: Call) -> Response:
    """``POST /api/workers/stop`` with ``{"ids": [...]}`` (none: every worker); does not wait."""
    body = call.json()
    ids = body.get("ids") if isinstance(body, dict) else None
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise InvalidInput('"ids" is a list of worker ids')
    return JSONResponse({"asked": workers.request_stop(call.store, ids or None)})


def list_schedules(call: Call) -> Response:
    return JSONResponse([shapes.schedule_json(s) for s in schedules.list_schedules(call.store)])
