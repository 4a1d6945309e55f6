"""Idle workers woken by a change stream that carries only what makes a job claimable.

The stream is filtered on the server to new jobs that are due and to updates that make a job
due (``ready`` set, or a staged batch published into a claimable state) and projected to the
event's id: heartbeats (which carry output tails), claims and outcomes are never shipped to the
idle workers. When the stream fails (an election, a cursor killed), it is reopened with backoff,
and each failure wakes the worker once, since events may have been missed meanwhile; between
reopenings the worker's poll interval is the fallback, as on a server without change streams.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from queuectl.core.lifecycle import CLAIMABLE

REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 30.0

WAKING_EVENTS: list[dict[str, Any]] = [
    {
        "$match": {
            "$or": [
                {"operationType": "insert", "fullDocument.ready": True},
                {"operationType": "update", "updateDescription.updatedFields.ready": True},
                {  # published from a staged batch (ready kept from staging), released, retried
                    "operationType": "update",
                    "updateDescription.updatedFields.state": {"$in": list(CLAIMABLE)},
                    "updateDescription.updatedFields.ready": {"$ne": False},
                },
            ]
        }
    },
    {"$project": {"_id": 1, "operationType": 1}},
]


def open_stream(collection: Any) -> Any:
    return collection.watch(WAKING_EVENTS, max_await_time_ms=1000)


class ChangeStreamWaker:
    """A thread turns change-stream events into bytes on a pipe the worker can select on."""

    def __init__(self, opener: Callable[[], Any], stream: Any, sleep: Callable[[float], bool] | None = None) -> None:
        self._open = opener
        self._stream = stream
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self.reopened = 0
        self._thread = threading.Thread(target=self._pump, daemon=True, name="queuectl-change-stream")
        self._thread.start()

    def _poke(self) -> None:
        if self._stop.is_set():
            return
        try:
            os.write(self._write, b"!")
        except (BlockingIOError, OSError):
            pass

    def _pump(self) -> None:
        backoff = REOPEN_FIRST_S
        opened_at = time.monotonic()
        while not self._stop.is_set():
            try:
                if self._stream is None:
                    self._stream = self._open()
                    self.reopened += 1
                    opened_at = time.monotonic()
                if not self._stream.alive:
                    raise ConnectionError("the change stream ended")
                if self._stream.try_next() is not None:
                    self._poke()
            except Exception:
                self._close_stream()
                if self._stop.is_set():
                    return
                self._poke()  # events may have been missed: let the worker look once
                if time.monotonic() - opened_at > REOPEN_MAX_S:
                    backoff = REOPEN_FIRST_S  # it had been healthy a good while: start over
                if self._sleep(backoff):
                    return
                backoff = min(backoff * 2, REOPEN_MAX_S)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass

    def fileno(self) -> int:
        return self._read

    def drain(self) -> bytes:
        received = b""
        try:
            while chunk := os.read(self._read, 4096):
                received += chunk
        except BlockingIOError:
            pass
        return received

    def close(self) -> None:
        self._stop.set()
        self._close_stream()
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
