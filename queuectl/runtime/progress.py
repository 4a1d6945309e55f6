"""A job's progress channel: a private pipe the worker reads, the job writes reports to.

No database credentials reach the job: it gets only its end of a pipe, at descriptor 3 (named
in ``QUEUECTL_PROGRESS_FD``), inherited by that job alone (every other descriptor of the worker
is close-on-exec). ``queuectl progress 40/100 "resizing"`` writes one JSON line to it.
"""

from __future__ import annotations

import contextlib
import os

PROGRESS_FD = 3  # where a job finds its progress channel (also named in QUEUECTL_PROGRESS_FD)
PROGRESS_FD_ENV = "QUEUECTL_PROGRESS_FD"
_PROGRESS_LINE = 1024  # a longer line on the channel is garbage, dropped


class Progress:
    """The worker's end of a job's progress channel: a pipe only that job holds the other end of.

    A job reports with ``queuectl progress 40/100 "resizing"`` (one JSON line). Whatever else
    arrives is dropped: a line that is not such a report, or is too long. The worker reads the
    channel only when it saves progress (each heartbeat) and when the job ends, never in its
    event loop: a job costs the busy path no extra wake-up, and one flooding the channel cannot
    slow the worker (both ends are non-blocking; only the latest report counts).
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        # the job's end too: a job writing to a full channel gets EAGAIN, it is never blocked
        os.set_blocking(self.write_fd, False)
        self._partial = b""
        self.latest: tuple[float, float | None, str | None] | None = None
        self.changed = False
        self.eof = False

    def fileno(self) -> int:
        return self.read_fd

    def job_started(self) -> None:
        """The job holds its end now: ours goes, so that the job's exit reads as end of file."""
        with contextlib.suppress(OSError):
            os.close(self.write_fd)
        self.write_fd = -1

    def read(self) -> None:
        """Take what the channel holds (at most 64 KiB per call: what a full pipe holds)."""
        for _ in range(16):
            try:
                chunk = os.read(self.read_fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            if len(self._partial) > _PROGRESS_LINE:
                self._partial = b""
            for line in lines:
                self._take(line)

    def _take(self, line: bytes) -> None:
        import json
        import math

        if len(line) > _PROGRESS_LINE:
            return
        try:
            report = json.loads(line)
            done = float(report["done"])
            total = None if report.get("total") is None else float(report["total"])
            message = report.get("message")
        except (ValueError, TypeError, KeyError, AttributeError):
            return  # garbage: the job is not harmed, the report is dropped
        if not math.isfinite(done) or (total is not None and not math.isfinite(total)):
            return
        self.latest = (done, total, message[:200] if isinstance(message, str) else None)
        self.changed = True

    def take_changed(self) -> tuple[float, float | None, str | None] | None:
        """The latest report if it changed since last asked (once per heartbeat: rate-limited)."""
        if not self.changed:
            return None
        self.changed = False
        return self.latest

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fd = self.write_fd = -1
