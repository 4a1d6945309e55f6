"""Rendering for people (Rich tables, imported only here) and for scripts (``--json``)."""

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from ..durations import format_duration
from ..models import Job, WorkerInfo

STATE_STYLES = {
    "pending": "cyan", "processing": "yellow", "completed": "green", "failed": "magenta",
    "dead": "red", "cancelled": "dim",
}


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def when(epoch: Optional[float]) -> str:
    """A UTC time in ISO-8601, to the second."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(epoch: Optional[float], now: float) -> str:
    if epoch is None:
        return "-"
    delta = now - epoch
    return f"in {format_duration(-delta)}" if delta < 0 else f"{format_duration(delta)} ago"


def first_line(text: Optional[str], width: int = 60) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def jobs_table(jobs: Iterable[Job], title: str, now: Optional[float] = None) -> None:
    from rich.table import Table

    now = now or time.time()
    out = console()
    wide = out.width >= 120
    table = Table(title=title, title_justify="left", expand=True)
    table.add_column("id", no_wrap=True, min_width=10)
    table.add_column("state", no_wrap=True, min_width=10)
    table.add_column("queue", no_wrap=True, max_width=12)
    table.add_column("pri", justify="right", no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("command", ratio=3, no_wrap=True, overflow="ellipsis", min_width=12)
    table.add_column("when", no_wrap=True)
    if wide:
        table.add_column("last error", ratio=2, no_wrap=True, overflow="ellipsis")
    for job in jobs:
        if job.state in ("pending", "failed"):
            moment = "due " + ago(job.run_at, now) if job.run_at > now else "ready"
        else:
            moment = ago(job.finished_at or job.updated_at, now)
        row = [
            job.id, f"[{STATE_STYLES.get(job.state, '')}]{job.state}[/]", job.queue,
            str(job.priority), f"{job.attempts}/{job.max_retries + 1}", first_line(job.command, 200),
            moment,
        ]
        if wide:
            row.append(first_line(job.last_error, 200))
        table.add_row(*row)
    out.print(table)


def job_detail(job: Job) -> None:
    from rich.table import Table

    now = time.time()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("id", job.id), ("command", job.command),
        ("state", f"[{STATE_STYLES.get(job.state, '')}]{job.state}[/]"), ("queue", job.queue),
        ("priority", str(job.priority)), ("attempts", f"{job.attempts} of {job.max_retries + 1}"),
        ("run at", f"{when(job.run_at)} ({ago(job.run_at, now)})"),
        ("timeout", format_duration(job.timeout) if job.timeout else "none"),
        ("cwd", job.cwd or "(the worker's)"),
        ("env", " ".join(f"{k}={v}" for k, v in job.env.items()) or "-"),
        ("locked by", job.locked_by or "-"), ("lease until", when(job.lease_expires_at)),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("duration", format_duration(job.duration)), ("last error", job.last_error or "-"),
        ("created", when(job.created_at)), ("started", when(job.started_at)),
        ("finished", when(job.finished_at)), ("updated", when(job.updated_at)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out = console()
    out.print(table)
    out.print("[bold]output[/] (tail):")
    out.print(job.output or "(none)", markup=False, highlight=False)


def workers_table(workers: Iterable[WorkerInfo], lease: float, now: Optional[float] = None) -> None:
    from rich.table import Table

    now = now or time.time()
    table = Table(title="workers", title_justify="left")
    for column in ("id", "host", "pid", "state", "queues", "slots", "current jobs", "heartbeat"):
        table.add_column(column)
    for worker in workers:
        stale = worker.state != "stopped" and now - worker.last_heartbeat > lease
        state = "[red]unresponsive[/]" if stale else worker.state
        table.add_row(
            worker.id, worker.host, str(worker.pid), state, worker.queues, str(worker.concurrency),
            ", ".join(worker.current_jobs) or "-", ago(worker.last_heartbeat, now),
        )
    console().print(table)


def key_value_table(title: str, headers: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    console().print(table)
