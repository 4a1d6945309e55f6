"""One clock for every host: the server's.

Leases and due times are compared across hosts, so each host reading its own clock lets one
that runs ahead recover live jobs of the others (their leases look expired to it). The store
measures how far this host's clock is from the server's (``hello`` reports the server's
``localTime``; the offset is taken at the middle of the round trip) when it opens and again
every few minutes, and :meth:`ServerClock.now` is this host's time corrected by it.
mongomock has no ``hello``: there the offset is 0 unless a test supplies the server's clock.
"""

from __future__ import annotations

import time
from typing import Any, Callable

RECHECK_S = 300.0  # the offset is measured again this often (clocks drift, NTP steps them)


class ServerClock:
    """This host's clock corrected to the server's; never raises (a failed measure keeps the old offset)."""

    def __init__(
        self,
        client: Any,
        host_clock: Callable[[], float] = time.time,
        server_clock: Callable[[], float] | None = None,
    ) -> None:
        self._client = client
        self._host = host_clock
        self._server = server_clock
        self.offset = 0.0  # server time minus this host's time, seconds
        self._measured_at: float | None = None
        self.measure()

    def _server_time(self) -> float | None:
        if self._server is not None:
            return self._server()
        try:
            reply = self._client.admin.command("hello")
        except NotImplementedError:  # mongomock
            return None
        local = reply.get("localTime")
        return local.timestamp() if local is not None else None

    def measure(self) -> None:
        """Take the offset now (one round trip); on an error keep the one we had."""
        before = self._host()
        self._measured_at = time.monotonic()  # a failed measure is tried again only at the next recheck
        try:
            server = self._server_time()
        except Exception:
            return
        after = self._host()
        if server is not None:
            self.offset = server - (before + after) / 2

    def now(self) -> float:
        """The server's time as this host best knows it (epoch seconds)."""
        if self._measured_at is None or time.monotonic() - self._measured_at > RECHECK_S:
            self.measure()
        return self._host() + self.offset
