"""The event log (``queuectl events``) and a running job's progress report (``queuectl progress``)."""

import json
import os
import sys
from typing import Optional

import typer

from queuectl.cli.context import store_of
from queuectl.core.errors import InvalidInput
from queuectl.core.models import Event

PROGRESS_FD_ENV = "QUEUECTL_PROGRESS_FD"


def events(
    ctx: typer.Context,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until Ctrl-C."),
    since: Optional[str] = typer.Option(
        None, "--since", metavar="SEQ|AGE", help="After this sequence number (1234), or this recent (10m, 2h)."
    ),
    job_id: Optional[str] = typer.Option(None, "--job", metavar="ID", help="Only this job's events."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="Only this queue's events."),
    limit: Optional[int] = typer.Option(
        None, "--limit", "-n", min=1, max=100000, help="At most this many (default without --since: the newest 100)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (NDJSON), for jq."),
) -> None:
    """Print the event log: enqueued, claimed, progress, completed, failed, dead, cancelled, ...

    With --follow it keeps printing; restart it with --since LAST_SEQ to go on without a gap or a
    repeat.

    Example: queuectl events --follow --json | jq .kind
    """
    import time

    from queuectl.service import events as service

    store = store_of(ctx)
    start = service.parse_since(since, time.time())
    write = _json_line if as_json else _text_line
    if not follow:
        for event in service.read_events(store, start, job_id, queue, limit):
            write(event)
        return
    after = service.start_of(store, start)
    for printed, event in enumerate(service.follow(store, after, job_id, queue), start=1):
        write(event)
        if limit is not None and printed >= limit:
            break


def _json_line(event: Event) -> None:
    sys.stdout.write(json.dumps(event.to_dict(), separators=(",", ":"), sort_keys=True) + "\n")
    sys.stdout.flush()


def _text_line(event: Event) -> None:
    from queuectl.cli.render import printable, when

    fields = " ".join(f"{key}={value}" for key, value in event.data.items() if value is not None)
    job = event.job_id or "-"
    text = f"{event.seq:>8} {when(event.at)} {event.kind:<19} {job:<12} {event.queue or '-':<10} {fields}"
    sys.stdout.write(printable(text.rstrip()) + "\n")
    sys.stdout.flush()


def parse_progress(amount: str) -> tuple[float, Optional[float]]:
    """``40/100``, ``40%`` or ``40`` -> (done, total)."""
    text = amount.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]), 100.0
        if "/" in text:
            done, _, total = text.partition("/")
            return float(done), float(total)
        return float(text), None
    except ValueError:
        raise InvalidInput(f"progress {amount!r}: give DONE/TOTAL (40/100), a percent (40%) or a count (40)") from None


def progress(
    amount: str = typer.Argument(..., metavar="DONE[/TOTAL]|PERCENT%"),
    message: Optional[str] = typer.Argument(None, help="What the job is doing now."),
) -> None:
    """Report a running job's progress to its worker, from inside the job (no database access).

    The worker passes the job a private channel, named in $QUEUECTL_PROGRESS_FD; elsewhere this
    does nothing.

    Example: queuectl progress 40/100 "resizing"
    """
    done, total = parse_progress(amount)
    if not all(value is None or (value == value and abs(value) != float("inf")) for value in (done, total)):
        raise InvalidInput(f"progress {amount!r}: the numbers must be finite")
    fd_text = os.environ.get(PROGRESS_FD_ENV)
    if not fd_text or not fd_text.isdigit():
        print("queuectl: progress: not running inside a queuectl job; nothing reported", file=sys.stderr)
        return
    line = json.dumps({"done": done, "total": total, "message": (message or "")[:200] or None}) + "\n"
    fd = int(fd_text)
    try:
        os.set_blocking(fd, False)  # never block the job: a full channel drops the report
        os.write(fd, line.encode())
    except OSError:
        pass  # the worker went away, or is not reading: a report is a courtesy


def register(app: typer.Typer) -> None:
    app.command()(events)
    app.command()(progress)
