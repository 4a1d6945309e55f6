"""One log line on stderr that never fails: a closed terminal must not kill a worker.

When the terminal that runs ``worker start`` is closed, every later write to it fails with EIO
(and a pipe whose reader went away with EPIPE). A log line is not worth a crash: a supervisor or
worker that died of its own ``print`` would leave its jobs running with nobody to stop or record
them. So the first failed write points stdout and stderr at /dev/null (for us and for anything we
start later) and the process carries on with its graceful stop.

Every line is a *record* first (:func:`emit`: who, which job, what happened, with fields) and
then one of two renderings of it, chosen once per process (:func:`set_format`): the text line a
person reads (``12:00:01 [w123-ab] job k3 completed (exit code 0, ran 4ms)``), or one JSON
object a line for a log shipper (``worker start --log-format json``). Both come from the same
record, so the two formats cannot drift apart.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

FORMATS = ("text", "json")
ENV_LOG_FORMAT = "QUEUECTL_LOG_FORMAT"  # the supervisor hands its --log-format to its workers
_silenced = False
_format = "text"


def set_format(name: str) -> None:
    """Render every later record as ``text`` (the default) or ``json``."""
    global _format
    _format = name if name in FORMATS else "text"


def emit(source: str, event: str, message: str, job: str | None = None, **fields: Any) -> None:
    """Log one record: ``source`` (a worker id, ``supervisor 123``) says what happened.

    ``event`` is a short stable name (``job_finished``, ``worker_started``) for machines,
    ``message`` the sentence for people; ``fields`` (exit_code, duration, queue, attempt,
    error...) are the record's facts, shown in JSON only (the message already says them).
    """
    now = time.time()
    if _format == "json":
        write_line(render_json(now, source, event, message, job, fields))
    else:
        write_line(f"{time.strftime('%H:%M:%S', time.localtime(now))} [{source}] {message}")


def render_json(now: float, source: str, event: str, message: str, job: str | None, fields: dict[str, Any]) -> str:
    """The record as one JSON object: time (RFC 3339, UTC, milliseconds), worker, job, event,
    message, then the fields that are set."""
    import json  # lazily: a text-logging worker never loads it

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    record = {"time": stamp, "worker": source, "job": job, "event": event, "message": message}
    record.update((key, value) for key, value in fields.items() if value is not None)
    return json.dumps(record, default=str)


def write_line(text: str) -> None:
    """Print ``text`` on stderr; once stderr has failed, say nothing from then on."""
    if _silenced:
        return
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # EIO: the terminal is gone; EPIPE; ValueError: stderr closed
        silence()


def silence() -> None:
    """Point fds 1 and 2 at /dev/null, so no later write (ours or a library's) can fail."""
    global _silenced
    _silenced = True
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
        os.close(null)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # what was buffered for the dead terminal now goes to /dev/null


def current_format() -> str:
    """``text`` or ``json``: what :func:`emit` renders."""
    return _format


def log(worker_id: str, message: str, event: str = "message", job: str | None = None, **fields: object) -> None:
    """A worker's record: :func:`emit` with the message first. A closed terminal (EIO) silences
    the log; it never stops the worker."""
    emit(worker_id, event, message, job, **fields)
