"""The ASGI app of ``queuectl serve``: one table of routes (which also writes the OpenAPI
schema), the web page's session, the health probes and the page's own assets (no CDN)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from queuectl.service import tokens
from queuectl.service.tokens import CONTROL, ENQUEUE, READ
from queuectl.web import api, streams
from queuectl.web.http import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Call,
    HttpError,
    Settings,
    as_response,
    error_response,
    handler,
    read_body,
)

STATIC = Path(__file__).resolve().parent / "static"
SESSION_MAX_AGE = 12 * 3600  # the page asks for the token again after this
PAGE_HEADERS = {
    # the page runs only its own script and style, and no other site can frame it
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    scope: str | None  # None: any live token
    summary: str
    work: Callable[[Call], Response]
    limit: int | None = None  # body limit, when not the default


def endpoints(settings: Settings) -> list[Endpoint]:
    """Every JSON endpoint that :func:`handler` serves (the streams and probes are added apart)."""
    return [
        Endpoint("POST", "/api/jobs", ENQUEUE, "Enqueue one job (202, Location)", api.enqueue),
        Endpoint(
            "POST",
            "/api/jobs:batch",
            ENQUEUE,
            "Enqueue a JSON array or NDJSON, all or nothing",
            api.enqueue_batch,
            settings.batch_limit,
        ),
        Endpoint("GET", "/api/jobs", READ, "Jobs newest first: state, queue, label, limit, cursor", api.list_jobs),
        Endpoint("GET", "/api/jobs/{id}", READ, "One job with its output tail", api.get_job),
        Endpoint("POST", "/api/jobs/{id}/cancel", CONTROL, "Cancel a job", api.cancel),
        Endpoint("POST", "/api/jobs/{id}/retry", CONTROL, "Retry a dead job (DLQ)", api.retry),
        Endpoint("POST", "/api/jobs/{id}/restart", CONTROL, "Run a finished job again, with edits", api.restart),
        Endpoint("POST", "/api/jobs/{id}/hold", CONTROL, "Keep a job back from workers", api.hold),
        Endpoint("POST", "/api/jobs/{id}/release", CONTROL, "Let a held job go on", api.release),
        Endpoint("GET", "/api/dlq", READ, "Dead jobs newest first: limit, cursor", api.list_dead),
        Endpoint("POST", "/api/dlq/retry", CONTROL, "Retry every dead job", api.retry_all),
        Endpoint("GET", "/api/status", READ, "Counts, workers, overload", partial(api.status, settings=settings)),
        Endpoint("GET", "/api/dashboard", READ, "The terminal dashboard's content", api.dashboard_view),
        Endpoint("GET", "/api/queues", READ, "Queues with counts and paused flag", api.list_queues),
        Endpoint(
            "POST",
            "/api/queues/{name}/pause",
            CONTROL,
            "Pause a queue (create=1 for a new one)",
            partial(api.pause_queue, paused=True),
        ),
        Endpoint(
            "POST", "/api/queues/{name}/resume", CONTROL, "Resume a queue", partial(api.pause_queue, paused=False)
        ),
        Endpoint("GET", "/api/workers", READ, "Workers with liveness (all=1: stopped too)", api.list_workers),
        Endpoint("POST", "/api/workers/stop", CONTROL, "Ask workers to stop: {ids: [...]}", api.stop_workers),
        Endpoint("GET", "/api/schedules", READ, "Cron schedules", api.list_schedules),
        Endpoint("GET", "/api/session", None, "Who the token is: name and scopes", whoami),
        Endpoint("GET", "/openapi.json", None, "This schema", partial(openapi, settings=settings)),
    ]


STREAMS = [
    ("GET", "/api/jobs/{id}/logs", READ, "A job's output (text/plain); head=N, tail=N; follow=1 streams until it ends"),
    ("GET", "/api/events", READ, "Server-Sent Events: job state changes"),
    ("POST", "/api/session", None, "Web page login: {token} -> HttpOnly cookie + CSRF cookie"),
    ("DELETE", "/api/session", None, "Web page logout"),
    ("GET", "/healthz", "", "The process is up (no token)"),
    ("GET", "/readyz", None, "The database is reachable; overload detail"),
    ("GET", "/metrics", READ, "Prometheus text, as queuectl metrics"),
]


def whoami(call: Call) -> Response:
    assert call.token is not None
    return JSONResponse({"id": call.token.id, "name": call.token.name, "scopes": list(call.token.scopes)})


def openapi(call: Call, settings: Settings) -> Response:
    paths: dict[str, dict[str, Any]] = {}
    rows = [(e.method, e.path, e.scope, e.summary) for e in endpoints(settings)] + STREAMS
    for method, path, scope, summary in rows:
        operation: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"}}}
        if scope != "":
            operation["security"] = [{"bearer": [scope] if scope else []}]
        paths.setdefault(path, {})[method.lower()] = operation
    return JSONResponse(
        {
            "openapi": "3.1.0",
            "info": {"title": "queuectl", "version": "1"},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "paths": paths,
        }
    )


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def login(settings: Settings, request: Request) -> Response:
    """``POST /api/session`` ``{"token": ...}``: the page's login. The token goes into an HttpOnly,
    SameSite=Strict cookie (no script can read it); a second, readable cookie carries the CSRF
    value that the page echoes in ``X-CSRF-Token`` on every write."""
    try:
        if "application/json" not in request.headers.get("content-type", ""):
            raise HttpError(400, 'send the token as JSON: {"token": "qct_..."}')
        try:
            presented = json.loads(await read_body(request, 4096))
        except ValueError:
            raise HttpError(400, "the body is not valid JSON") from None
        if not isinstance(presented, dict) or not isinstance(presented.get("token"), str):
            raise HttpError(400, 'send {"token": "qct_..."}')
        token = await run_in_threadpool(tokens.authenticate, settings.store(), presented["token"].strip())
        if token is None:
            raise HttpError(401, "the token is not valid (wrong, or revoked)")
    except Exception as exc:  # noqa: BLE001
        return as_response(exc)
    response = JSONResponse({"id": token.id, "name": token.name, "scopes": list(token.scopes)})
    common: dict[str, Any] = {"max_age": SESSION_MAX_AGE, "samesite": "strict", "secure": _secure(request), "path": "/"}
    response.set_cookie(SESSION_COOKIE, presented["token"].strip(), httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), httponly=False, **common)
    return response


async def logout(request: Request) -> Response:
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def readyz(call: Call, settings: Settings) -> Response:
    """200 once the database answers (with the overload detail), 503 when it does not."""
    from queuectl.service import observe

    now = time.time()
    try:
        summary = observe.status(call.store, now)
    except Exception as exc:  # noqa: BLE001 - not ready, for whatever reason
        return error_response(503, f"the database is not reachable: {exc}")
    return JSONResponse({"ready": True, **api.overload(call, settings, summary, now)})


def metrics(call: Call) -> Response:
    from queuectl.web.metrics import exposition

    return PlainTextResponse(exposition(call.store), media_type="text/plain; version=0.0.4; charset=utf-8")


def asset(name: str, media_type: str) -> Callable[[Request], Any]:
    async def serve(request: Request) -> Response:
        headers = {**PAGE_HEADERS, "Cache-Control": "no-cache"}
        return FileResponse(STATIC / name, media_type=media_type, headers=headers)

    return serve


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"no such endpoint: {request.method} {request.url.path}; see /openapi.json")


async def not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(405, f"{request.method} is not allowed on {request.url.path}")


def create_app(settings: Settings) -> Starlette:
    routes = [
        Route(e.path, handler(settings, e.scope, e.work, e.limit), methods=[e.method]) for e in endpoints(settings)
    ]
    routes += [
        Route("/api/jobs/{id}/logs", partial(_logs, settings), methods=["GET"]),
        Route("/api/events", partial(streams.event_stream, settings), methods=["GET"]),
        Route("/api/session", partial(login, settings), methods=["POST"]),
        Route("/api/session", logout, methods=["DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", handler(settings, None, partial(readyz, settings=settings)), methods=["GET"]),
        Route("/metrics", handler(settings, READ, metrics), methods=["GET"]),
        Route("/", asset("index.html", "text/html; charset=utf-8"), methods=["GET"]),
        Route("/static/app.js", asset("app.js", "text/javascript; charset=utf-8"), methods=["GET"]),
        Route("/static/app.css", asset("app.css", "text/css; charset=utf-8"), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})


async def _logs(settings: Settings, request: Request) -> Response:
    if request.query_params.get("follow", "0").lower() in ("1", "true"):  # as Call.flag reads it
        return await streams.logs(settings, request)
    return await handler(settings, READ, api.job_logs)(request)
