"""The two endpoints that stream: a job's output as it grows (``logs?follow=1``) and the job
state changes (``GET /api/events``, Server-Sent Events). Both poll the store from a worker
thread; neither holds a transaction or a connection of another thread while it waits."""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from queuectl.core.lifecycle import FINISHED
from queuectl.service import changes, tokens
from queuectl.service import jobs as service
from queuectl.service.logtail import Follower
from queuectl.service.shapes import rfc3339
from queuectl.service.tokens import READ
from queuectl.web.http import Settings, as_response, authorise, presented_token

FOLLOW_INTERVAL = 0.5  # seconds between two reads of a followed job (as `logs --follow`)
EVENTS_INTERVAL = 0.5  # seconds between two reads of the changes
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream
RECHECK_S = 10.0  # a revoked token's stream ends within this


def follow_logs(settings: Settings, request: Request) -> AsyncIterator[bytes]:
    """The job's stored output, then each new part, until it completed, died or was cancelled."""
    job_id = request.path_params["id"]

    async def chunks() -> AsyncIterator[bytes]:
        job = await run_in_threadpool(service.find_job, settings.store(), job_id)
        if job is None:
            return
        follower = Follower(job)
        for event in follower.first(job):
            if event.text:
                yield event.text.encode()
        while job.state not in FINISHED:
            await asyncio.sleep(FOLLOW_INTERVAL)
            latest = await run_in_threadpool(service.find_job, settings.store(), job_id)
            if latest is None:
                return
            job = latest
            for event in follower.update(job):
                if event.text:
                    yield event.text.encode()

    return chunks()


async def logs(settings: Settings, request: Request) -> Response:
    """``GET /api/jobs/{id}/logs?follow=1``: ``text/plain`` streamed until the job ends."""

    def check() -> None:
        authorise(settings.store(), request, READ)
        service.get_job(settings.store(), request.path_params["id"])

    try:
        await run_in_threadpool(check)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON error
        return as_response(exc)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(follow_logs(settings, request), media_type="text/plain; charset=utf-8", headers=headers)


def _sse(job_event: dict[str, str | None], cursor: str) -> bytes:
    return f"id: {cursor}\nevent: job\ndata: {json.dumps(job_event)}\n\n".encode()


async def event_stream(settings: Settings, request: Request) -> Response:
    """``GET /api/events``: an ``event: job`` per change ``{id, state, queue, updated_at}``.

    Starts at ``Last-Event-ID`` (a reconnecting EventSource sends it) or ``?since=`` (epoch
    seconds), else now. The source is :func:`queuectl.service.changes.changes`.
    """
    try:
        await run_in_threadpool(authorise, settings.store(), request, READ)
        start = request.headers.get("last-event-id") or request.query_params.get("since")
        cursor = changes.Cursor.decode(start) if start else changes.Cursor(time.time())
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON error
        return as_response(exc)
    presented = presented_token(request)[0] or ""

    async def stream() -> AsyncIterator[bytes]:
        nonlocal cursor
        yield b"retry: 2000\n: queuectl events\n\n"
        quiet_since = checked = time.monotonic()
        while True:
            changed, cursor = await run_in_threadpool(changes.changes, settings.store(), cursor)
            for job in changed:
                event = {"id": job.id, "state": job.state, "queue": job.queue, "updated_at": rfc3339(job.updated_at)}
                yield _sse(event, repr(job.updated_at))
            now = time.monotonic()
            if changed:
                quiet_since = now
            elif now - quiet_since >= KEEPALIVE_S:
                quiet_since = now
                yield b": keep-alive\n\n"
            if now - checked >= RECHECK_S:
                checked = now
                if await run_in_threadpool(tokens.authenticate, settings.store(), presented) is None:
                    yield b"event: end\ndata: the token was revoked\n\n"
                    return
            await asyncio.sleep(EVENTS_INTERVAL)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
