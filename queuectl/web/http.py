"""HTTP plumbing of ``queuectl serve``: JSON errors with the right status, bounded bodies, and who
is asking (a bearer token, or the web page's cookie with its CSRF check).

Every endpoint runs its store work through :func:`handler`, in a worker thread with a store of
that thread's own (a SQLite connection is not shared by threads in the middle of a transaction).
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from queuectl.core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QueuectlError,
    StoreCorrupt,
    StoreReadOnly,
    StoreUnavailable,
)
from queuectl.service import tokens
from queuectl.store import Store, open_store

SESSION_COOKIE = "queuectl_session"
CSRF_COOKIE = "queuectl_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD")


class HttpError(Exception):
    """A request refused with ``status``; the message is shown to the client as is."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


STATUS_OF: list[tuple[type[QueuectlError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (StoreReadOnly, 503),
    (StoreCorrupt, 503),
    (StoreUnavailable, 503),
]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def as_response(exc: Exception) -> JSONResponse:
    """The JSON error for an exception: ours by class, anything else a 500 (traceback to stderr)."""
    if isinstance(exc, HttpError):
        return error_response(exc.status, str(exc), exc.headers)
    for kind, status in STATUS_OF:
        if isinstance(exc, kind):
            return error_response(status, str(exc))
    if isinstance(exc, QueuectlError):
        return error_response(500, str(exc))
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return error_response(500, "internal error; the server's log has the details")


@dataclass
class Settings:
    """What ``serve`` was started with."""

    url: str
    body_limit: int = 64 * 1024  # one job
    batch_limit: int = 16 * 1024 * 1024  # POST /api/jobs:batch
    max_lag: float = 300.0  # overload: the oldest due job waited longer than this (seconds)
    max_depth: int = 100_000  # overload: more pending jobs than this
    max_follows: int = 64  # live log streams at once: each holds a thread while its job runs
    create_folder: bool = False  # the default data folder only, as the CLI
    opener: Callable[[], Store] | None = None  # tests: one shared store (mongomock) instead of the URL
    stores: threading.local = field(default_factory=threading.local)
    shared: Store | None = None
    opening: threading.Lock = field(default_factory=threading.Lock)
    # writes of this process queue here rather than in SQLite's busy handler, whose sleeps
    # (up to 100 ms each) would be the latency of a write that found the lock taken
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    follows: threading.BoundedSemaphore = field(init=False)  # the free places of max_follows

    def __post_init__(self) -> None:
        self.follows = threading.BoundedSemaphore(max(1, self.max_follows))

    def store(self) -> Store:
        """This thread's store (opened on first use). A store without transactions (MongoDB: its
        client is thread-safe and pools connections) is opened once and shared by every thread."""
        store = getattr(self.stores, "store", None) or self.shared
        if store is not None:
            return store
        with self.opening:
            if self.shared is not None:
                return self.shared
            store = self.opener() if self.opener else open_store(self.url, create_folder=self.create_folder)
            if store.transactional:
                self.stores.store = store
            else:
                self.shared = store
        return store


@dataclass
class Call:
    """One authorised request, as an endpoint sees it."""

    request: Request
    store: Store
    token: tokens.Token | None
    body: bytes = b""

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    def flag(self, name: str) -> bool:
        value = (self.query(name) or "").lower()
        if value not in ("", "0", "1", "true", "false"):
            raise HttpError(400, f"query parameter {name} is 0 or 1, not {value[:20]!r}")
        return value in ("1", "true")

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self.query(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise HttpError(400, f"query parameter {name} is a whole number, not {text[:20]!r}") from None
        if not low <= value <= high:
            raise HttpError(400, f"query parameter {name} is {low} to {high}, not {value}")
        return value

    def json(self) -> Any:
        """The body as JSON (an empty body reads as ``{}``); 400 if it does not parse."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None

    def scoped(self, scope: str) -> bool:
        return self.token is not None and scope in self.token.scopes


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"the body is over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def presented_token(request: Request) -> tuple[str | None, bool]:
    """The token presented and whether it came from the session cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise HttpError(401, "use an Authorization: Bearer <token> header", {"WWW-Authenticate": "Bearer"})
        return value.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


def authorise(store: Store, request: Request, scope: str | None) -> tokens.Token:
    """The token of the request, which must hold ``scope`` (None: any live token).

    401 without a token or with one that is wrong or revoked; 403 if it lacks the scope, or if a
    cookie-authenticated write comes without the CSRF header matching the CSRF cookie.
    """
    presented, by_cookie = presented_token(request)
    challenge = {"WWW-Authenticate": "Bearer"}
    if presented is None:
        raise HttpError(401, "a token is needed: Authorization: Bearer <token> (queuectl token create)", challenge)
    token = tokens.authenticate(store, presented)
    if token is None:
        raise HttpError(401, "the token is not valid (wrong, or revoked)", challenge)
    if by_cookie and request.method not in SAFE_METHODS:
        expected = request.cookies.get(CSRF_COOKIE, "")
        given = request.headers.get(CSRF_HEADER, "")
        if not expected or not hmac.compare_digest(expected, given):
            raise HttpError(403, "missing or wrong X-CSRF-Token header (the page's CSRF check)")
    if scope is not None and scope not in token.scopes:
        raise HttpError(403, f"this token lacks the {scope} scope (it has: {', '.join(token.scopes)})")
    return token


Endpoint = Callable[[Call], Response]


def handler(
    settings: Settings, scope: str | None, work: Endpoint, limit: int | None = None, auth: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    """An ASGI endpoint: read the bounded body, then authorise and run ``work`` in a thread."""

    async def endpoint(request: Request) -> Response:
        try:
            if request.method in SAFE_METHODS:  # one trip to a worker thread

                def run() -> Response:
                    store = settings.store()
                    token = authorise(store, request, scope) if auth else None
                    return work(Call(request, store, token))

                return await run_in_threadpool(run)
            declared = request.headers.get("content-length", "")
            small = declared.isdigit() and int(declared) <= settings.body_limit
            token = None
            if auth and not small:  # a big body is read only once its sender is known
                token = await run_in_threadpool(authorise, settings.store(), request, scope)
            body = await read_body(request, limit or settings.body_limit)

            def write() -> Response:
                store = settings.store()
                who = authorise(store, request, scope) if auth and small else token
                with settings.write_lock:
                    return work(Call(request, store, who, body))

            return await run_in_threadpool(write)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON error
            return as_response(exc)

    return endpoint
