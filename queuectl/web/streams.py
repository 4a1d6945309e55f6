"""The two endpoints that stream: a job's output as it grows (``logs?follow=1``) and the event
log (``GET /api/events``, Server-Sent Events). Both read the store from threads, never the
event loop; neither holds a transaction while it waits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
import weakref
from typing import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from queuectl.core.errors import InvalidInput, QueuectlError, StoreUnavailable
from queuectl.core.models import Event, Job
from queuectl.service import events, tokens
from queuectl.service import jobs as service
from queuectl.service.livetail import opener
from queuectl.service.logtail import follow
from queuectl.service.tokens import READ
from queuectl.store import Store
from queuectl.web.api import log_lines_asked
from queuectl.web.http import Call, Settings, as_response, authorise, error_response, presented_token

FOLLOW_INTERVAL = 0.5  # seconds between two reads of a followed job (as `logs --follow`)
EVENTS_INTERVAL = 0.5  # seconds between two reads of the event log
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream
RECHECK_S = 10.0  # a revoked token's stream ends within this


class FollowPlace:
    """One of ``serve --max-follows`` places, held by a live follow from its request until its
    stream ends (or, a stream never started, its generator is dropped); given back once."""

    def __init__(self, places: threading.BoundedSemaphore) -> None:
        self._places = places
        self._held = True
        self._lock = threading.Lock()

    @classmethod
    def take(cls, places: threading.BoundedSemaphore) -> FollowPlace | None:
        """A free place, or None when every one is held."""
        return cls(places) if places.acquire(blocking=False) else None

    def give_back(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._places.release()


def follow_logs(settings: Settings, request: Request, tail: int | None, place: FollowPlace) -> AsyncIterator[bytes]:
    """The job's output until it completed, died or was cancelled (``tail``: first only its last
    N lines), from ``logs --follow``'s own loop (:func:`queuectl.service.logtail.follow`): live
    from the worker's spool while the job runs on this host, else as the store has it.

    That loop blocks, so it runs in a thread of its own per stream (not the server's pool, which
    it would hold for as long as the job runs), handing each part to this generator; when the
    client goes away, the thread stops within its next short wait."""
    job_id = request.path_params["id"]

    async def chunks() -> AsyncIterator[bytes]:
        handoff = Handoff(asyncio.get_running_loop())
        store = settings.store()
        args = (store, job_id, tail, handoff)
        threading.Thread(target=_follow, args=args, name=f"follow {job_id}", daemon=True).start()
        try:
            while (part := await handoff.get()) is not None:
                yield part
        finally:
            handoff.gone.set()
            place.give_back()

    stream = chunks()
    weakref.finalize(stream, place.give_back)  # a stream whose client left before it started
    return stream


class Handoff:
    """Parts from a follower's thread to the stream's generator, at most ``size`` waiting: a
    client that reads slower than the job writes holds the thread back (as a slow terminal holds
    ``logs --follow``), so the server never buffers more than that much of a job's output."""

    WAIT_S = 0.5  # a blocked follower looks this often whether its client went away

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int = 64) -> None:
        self.loop = loop
        self.parts: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size)
        self.gone = threading.Event()  # the client went away (or the server's loop closed)

    def put(self, part: bytes | None) -> None:
        """From the follower's thread: wait for room; _ClientGone once nobody reads any more."""
        try:
            handed = asyncio.run_coroutine_threadsafe(self.parts.put(part), self.loop)
        except RuntimeError:  # the server's loop closed
            self.gone.set()
            raise _ClientGone from None
        while True:
            try:
                handed.result(timeout=self.WAIT_S)
                return
            except concurrent.futures.TimeoutError:
                if self.gone.is_set():
                    handed.cancel()
                    raise _ClientGone from None

    async def get(self) -> bytes | None:
        return await self.parts.get()


class _ClientGone(Exception):
    """The stream's client went away: its follower stops."""


def _follow(store: Store, job_id: str, tail: int | None, handoff: Handoff) -> None:
    gone, put = handoff.gone, handoff.put

    def read() -> Job | None:
        if gone.is_set():
            raise _ClientGone
        return service.find_job(store, job_id)

    def sleep(seconds: float) -> None:
        if gone.wait(seconds):
            raise _ClientGone

    try:
        follow(
            read,
            lambda text: put(text.encode()),
            lambda note: None,  # the CLI's notes go to its stderr; a stream has only the output
            interval=FOLLOW_INTERVAL,
            sleep=sleep,
            on_error=lambda exc: isinstance(exc, StoreUnavailable),  # an outage: keep following
            live=opener(store),
            tail=tail,
        )
    except (_ClientGone, QueuectlError):
        pass  # the client left, or the store failed: the stream ends (its headers are long sent)
    finally:  # whatever ended the loop (a bug too), the stream ends rather than hang
        with contextlib.suppress(_ClientGone):
            if not gone.is_set():
                put(None)


async def logs(settings: Settings, request: Request) -> Response:
    """``GET /api/jobs/{id}/logs?follow=1``: ``text/plain`` streamed until the job ends."""

    def check() -> int | None:
        token = authorise(settings.store(), request, READ)
        _, tail = log_lines_asked(Call(request, settings.store(), token), follow=True)
        service.get_job(settings.store(), request.path_params["id"])
        return tail

    try:
        tail = await run_in_threadpool(check)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON error
        return as_response(exc)
    place = FollowPlace.take(settings.follows)
    if place is None:
        return error_response(
            503,
            f"this server already streams {settings.max_follows} live logs (serve --max-follows): "
            "try again later, or read the logs without follow",
            {"Retry-After": "5"},
        )
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    chunks = follow_logs(settings, request, tail, place)
    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8", headers=headers)


def _sse(event: Event) -> bytes:
    kind = "job" if event.job_id else "worker"
    data = json.dumps(event.to_dict(), separators=(",", ":"), sort_keys=True)
    return f"id: {event.seq}\nevent: {kind}\ndata: {data}\n\n".encode()


def _start(settings: Settings, request: Request) -> events.Cursor:
    """Where the stream starts: after ``Last-Event-ID`` (the ``seq`` of the last event a
    reconnecting EventSource received), or ``?since=`` as ``queuectl events --since`` (a
    sequence number or an age), else after the newest event. The filters are ``events``'s."""
    store = settings.store()
    resume = request.headers.get("last-event-id")
    if resume is not None and not (resume.strip().isascii() and resume.strip().isdigit()):
        raise InvalidInput(f"bad Last-Event-ID {resume[:40]!r}: send the id (seq) of the last event received")
    since = events.Since(seq=events.parse_seq(resume, "Last-Event-ID")) if resume is not None else None
    since = since or events.parse_since(request.query_params.get("since"), time.time())
    after = events.start_of(store, since)
    query = request.query_params
    return events.Cursor(after, query.get("job") or None, query.get("queue") or None)


async def event_stream(settings: Settings, request: Request) -> Response:
    """``GET /api/events``: the event log (:mod:`queuectl.service.events`) as Server-Sent Events.

    Each event is ``id: SEQ``, ``event: job`` (or ``worker`` for a worker's own events) and the
    JSON line ``queuectl events --json`` prints. Following is gap-aware, so a client that
    reconnects with ``Last-Event-ID`` sees every later event once and in order.
    """
    try:
        await run_in_threadpool(authorise, settings.store(), request, READ)
        cursor = await run_in_threadpool(_start, settings, request)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON error
        return as_response(exc)
    presented = presented_token(request)[0] or ""

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n: queuectl events\n\n"
        quiet_since = checked = time.monotonic()
        while True:
            logged = await run_in_threadpool(lambda: cursor.poll(settings.store()))
            for event in logged:
                yield _sse(event)
            now = time.monotonic()
            if logged:
                quiet_since = now
            elif now - quiet_since >= KEEPALIVE_S:
                quiet_since = now
                yield b": keep-alive\n\n"
            if now - checked >= RECHECK_S:
                checked = now
                if await run_in_threadpool(tokens.authenticate, settings.store(), presented) is None:
                    yield b"event: end\ndata: the token was revoked\n\n"
                    return
            if not cursor.more:
                await asyncio.sleep(EVENTS_INTERVAL)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
