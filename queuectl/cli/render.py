"""Rendering for people (Rich tables, imported only here) and for scripts (``--json``).

Everything a user or a job supplied (commands, output, errors, queue and schedule names...) goes
through :func:`printable` before it reaches a terminal, so that stored bytes cannot drive the
viewer's terminal (clear the screen, retitle the window, fake lines with ``\\r``).
"""

import json
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from queuectl.core.durations import format_duration
from queuectl.core.models import Attempt, Job, WorkerInfo

STATE_STYLES = {
    "pending": "cyan",
    "waiting": "blue",
    "processing": "yellow",
    "completed": "green",
    "failed": "magenta",
    "dead": "red",
    "cancelled": "dim",
}


def styled_state(state: str) -> str:
    """A state name in its colour, as Rich markup."""
    return f"[{STATE_STYLES.get(state, 'default')}]{safe(state)}[/]"


# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the bidi
# overrides and isolates that make a terminal show text in another order than it runs
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: Optional[str]) -> str:
    """User text without terminal control characters (each becomes U+FFFD, so it shows); newlines stay."""
    return _CONTROL.sub("\ufffd", text or "")


def safe(text: Optional[str]) -> str:
    """User text (commands, errors, ids) made printable and escaped so Rich never reads it as markup."""
    from rich.markup import escape

    return escape(printable(text))


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
        elif job.state == "processing" and job.progress_done is not None:
            from queuectl.service.history import progress_text

            moment = progress_text(job)  # 40% resizing (ETA 12s)
        else:
            moment = ago(job.finished_at or job.updated_at, now)
        row = [
            safe(job.id),
            styled_state(job.state),
            safe(job.queue),
            str(job.priority),
            f"{job.attempts}/{job.max_retries + 1}",
            safe(first_line(job.command, 200)),
            moment,
        ]
        if wide:
            row.append(safe(first_line(job.last_error, 200)))
        table.add_row(*row)
    out.print(table)


def job_detail(job: Job, progress: str = "-") -> None:
    from rich.table import Table

    now = time.time()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("id", safe(job.id)),
        ("command", safe(job.command)),
        ("state", styled_state(job.state)),
        ("queue", safe(job.queue)),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} of {job.max_retries + 1}"),
        ("run at", f"{when(job.run_at)} ({ago(job.run_at, now)})"),
        ("timeout", format_duration(job.timeout) if job.timeout else "none"),
        ("cwd", safe(job.cwd) or "(the worker's)"),
        ("env", safe(" ".join(f"{k}={v}" for k, v in job.env.items())) or "-"),
        ("after", safe(", ".join(job.after)) or "-"),
        ("on failure of", safe(job.on_failure_of) or "-"),
        ("unique key", safe(job.unique_key) or "-"),
        ("on finish", _hook_text(job)),
        ("schedule", safe(job.schedule) or "-"),
        ("locked by", safe(job.locked_by) or "-"),
        ("lease until", when(job.lease_expires_at)),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("duration", format_duration(job.duration)),
        ("progress", safe(progress)),
        ("last error", safe(job.last_error) or "-"),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("updated", when(job.updated_at)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out = console()
    out.print(table)
    out.print("[bold]output[/] (tail; `queuectl logs` prints it raw):")
    out.print(printable(job.output) or "(none)", markup=False, highlight=False)


def attempts_table(attempts: Iterable[Attempt]) -> None:
    """A job's history: one row per attempt that ended (``queuectl logs ID --attempt N`` prints its output)."""
    from rich.table import Table

    table = Table(title="attempts", title_justify="left")
    for column in (
        "#",
        "worker",
        "host",
        "pid",
        "claimed",
        "ended",
        "how",
        "exit",
        "duration",
        "max rss",
        "cpu",
        "error",
    ):
        table.add_column(column)
    for row in attempts:
        exit_text = "-" if row.exit_code is None else str(row.exit_code)
        if row.signal:
            exit_text = f"signal {row.signal}"
        table.add_row(
            str(row.number),
            safe(row.worker) or "-",
            safe(row.host) or "-",
            "-" if row.pid is None else str(row.pid),
            when(row.claimed_at),
            when(row.ended_at),
            safe(row.ended),
            exit_text,
            format_duration(row.duration),
            "-" if row.max_rss_kb is None else f"{row.max_rss_kb / 1024:.1f} MiB",
            "-" if row.cpu_s is None else f"{row.cpu_s:.2f}s",
            safe(row.error) or "-",
        )
    console().print(table)


def _hook_text(job: Job) -> str:
    if not job.on_finish:
        return "-"
    status = job.hook_state or "not run yet"
    if job.hook_error:
        status += f": {job.hook_error}"
    return safe(f"{job.on_finish} ({status})")


def workers_table(workers: Iterable[WorkerInfo], lease: float, now: Optional[float] = None) -> None:
    from rich.table import Table

    now = now or time.time()
    table = Table(title="workers", title_justify="left")
    for column in ("id", "host", "pid", "state", "queues", "slots", "current jobs", "heartbeat"):
        table.add_column(column)
    for worker in workers:
        stale = worker.state != "stopped" and now - worker.last_heartbeat > lease
        state = "[red]unresponsive[/]" if stale else safe(worker.state)
        table.add_row(
            safe(worker.id),
            safe(worker.host),
            str(worker.pid),
            state,
            safe(worker.queues),
            str(worker.concurrency),
            safe(", ".join(worker.current_jobs)) or "-",
            ago(worker.last_heartbeat, now),
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


def plain_table(title: str, headers: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    """A table of user-provided text: every cell escaped."""
    key_value_table(title, headers, [tuple(safe(cell) for cell in row) for row in rows])
