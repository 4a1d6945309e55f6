"""Wake idle workers on PostgreSQL with ``LISTEN``/``NOTIFY``: no polling while the server is up.

The worker's loop waits on file descriptors, so the waker hands it one: the read end of a pipe. A
thread holds a connection of its own that LISTENs on the queue's channel and writes one byte to the
pipe per notification (``s`` for a stop request, ``!`` for new work). When that connection is lost
the thread reopens it every :data:`PG_LISTEN_RETRY_S` (the worker polls meanwhile, as it always does
at its poll interval), and once back it writes ``!``: a notification sent while it was away is lost,
so the worker looks for work instead.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from queuectl.core.defaults import PG_CONNECT_TIMEOUT_S, PG_LISTEN_RETRY_S


class PgWaker:
    """A readable descriptor per notification on ``channel``; see the module docstring."""

    def __init__(self, params: dict[str, Any], channel: str) -> None:
        self._params = params
        self._channel = channel
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._closed = threading.Event()
        self._conn: Any = None
        self.listening = threading.Event()  # set while LISTEN is in place (tests wait on it)
        self._thread = threading.Thread(target=self._listen, name="queuectl-pg-listen", daemon=True)
        self._thread.start()
        # a notification sent before LISTEN is in place would be missed: wait for it (not forever:
        # with the server down the worker polls, and the thread keeps trying)
        self.listening.wait(PG_CONNECT_TIMEOUT_S)

    def fileno(self) -> int:
        return self._read

    def drain(self) -> bytes:
        data = b""
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self._read, 4096):
                data += chunk
        return data

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel_safe(timeout=1.0)
        self._thread.join(timeout=2.0)
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _signal(self, byte: bytes) -> None:
        with contextlib.suppress(OSError):  # a full pipe already says "look"
            os.write(self._write, byte)

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        first = True
        while not self._closed.is_set():
            try:
                with psycopg.connect(**self._params, autocommit=True) as conn:
                    self._conn = conn
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.listening.set()
                    if not first:
                        self._signal(b"!")  # back after a loss: what was missed is looked for
                    first = False
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._signal(b"s" if note.payload == "s" else b"!")
            except Exception:
                pass  # lost (or never had) the connection: retry below
            finally:
                self._conn = None
                self.listening.clear()
            self._closed.wait(PG_LISTEN_RETRY_S)
