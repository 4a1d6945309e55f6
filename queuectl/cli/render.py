"""Rendering for people (Rich tables, imported only here) and for scripts (``--json``).

Everything a user or a job supplied (commands, output, errors, queue and schedule names...) goes
through :func:`printable` before it reaches a terminal, so that stored bytes cannot drive the
viewer's terminal (clear the screen, retitle the window, fake lines with ``\\r``).
"""

import re
import time
from typing import Any, Iterable, Optional

from queuectl.core.config import RuntimeConfig
from queuectl.core.durations import format_duration
from queuectl.core.models import Attempt, Job, WorkerInfo

STATE_STYLES = {
    "pending": "cyan",
    "waiting": "blue",
    "held": "bright_black",
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
    from queuectl.cli.output import print_json as write

    write(data)


def when(epoch: Optional[float]) -> str:
    """A UTC time in RFC 3339, to the millisecond (``-`` for none)."""
    from queuectl.service.shapes import rfc3339

    return rfc3339(epoch) or "-"


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


def jobs_table(
    jobs: Iterable[Job],
    title: str,
    fmt: str = "table",
    now: Optional[float] = None,
    waits: Optional[dict[str, list[str]]] = None,
) -> None:
    """Jobs as a table (the command column shrinks first) or as TSV rows with every value whole.
    ``waits``: what each waiting job still waits for, shown in its ``when`` cell (TSV: every id,
    comma-separated, in a last ``waits for`` column, so a script never parses the sentence)."""
    from queuectl.cli.output import Column, emit

    now = now or time.time()
    tsv = fmt == "tsv"
    wide = tsv or console().width >= 120
    columns = [
        Column("id"),
        Column("state"),
        Column("queue", drop=3),
        Column("pri", justify="right", drop=1),
        Column("tries", justify="right", drop=2),
        Column("command", shrink=True),
        Column("when", drop=4),
    ]
    if wide:
        columns.append(Column("last error", shrink=True))
    if tsv and waits is not None:
        columns.append(Column("waits for"))
    rows = []
    for job in jobs:
        due = job.state in ("pending", "failed")
        if tsv:
            moment = when(job.run_at if due else (job.finished_at or job.updated_at))
        elif due:
            moment = "due " + ago(job.run_at, now) if job.run_at > now else "ready"
        elif waits is not None and job.id in waits:
            from queuectl.service.deps import waits_text

            moment = waits_text(waits[job.id])  # waits for abc123 (+2)
        elif job.state == "processing" and job.progress_done is not None:
            from queuectl.service.history import progress_text

            moment = progress_text(job)  # 40% resizing (ETA 12s)
        else:
            moment = ago(job.finished_at or job.updated_at, now)
        row = [
            job.id,
            (job.state, STATE_STYLES.get(job.state, "")),
            job.queue,
            str(job.priority),
            f"{job.attempts}/{job.max_retries + 1}",
            job.command,
            moment,
        ]
        if wide:
            row.append(job.last_error or "")
        if tsv and waits is not None:
            row.append(",".join(waits.get(job.id, ())))
        rows.append(row)
    emit(fmt, title, columns, rows)


SHOW_OUTPUT_LINES = 20  # show prints this much of the output; logs prints it all


def _relatives_text(rows: Iterable[Any], more: int = 0, floor: bool = False) -> str:
    """``a (completed), b (waiting) … and 3 more`` (Rich markup: states coloured)."""
    parts = [f"{safe(row.id)} ({styled_state(row.state) if row.state else '[dim]purged[/]'})" for row in rows]
    if more:
        parts.append(f"… and {more:,}{'+' if floor else ''} more (queuectl tree)")
    return ", ".join(parts) or "-"


def job_detail(job: Job, progress: str = "-", relatives: Any = None) -> None:
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
        ("labels", safe(" ".join(f"{k}={v}" for k, v in job.labels.items())) or "-"),
        ("after", safe(", ".join(job.after)) or "-"),
        ("on failure of", safe(job.on_failure_of) or "-"),
    ]
    if relatives is not None:  # (parents, dependants) of service.deps.relatives
        parents, dependants = relatives
        after = [row for row in parents if row.kind == "after"]
        failure = [row for row in parents if row.kind != "after"]
        rows[-2:] = [("after", _relatives_text(after)), ("on failure of", _relatives_text(failure))]
        rows.append(("dependants", _relatives_text(dependants.shown, dependants.more, dependants.more_is_floor)))
    rows += [
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
    from queuectl.service.logtail import split_marker, tail_lines

    dropped, kept = split_marker(job.output or "")
    shown = tail_lines(kept, SHOW_OUTPUT_LINES)
    hidden = len(kept.splitlines()) - len(shown.splitlines())
    if hidden or dropped:
        lost = f"; {dropped} earlier bytes were not kept (output-limit)" if dropped else ""
        out.print(f"[bold]output[/] (last {SHOW_OUTPUT_LINES} lines; all of it: queuectl logs {safe(job.id)}{lost}):")
    else:
        out.print("[bold]output[/] (`queuectl logs` prints it raw):")
    out.print(printable(shown.rstrip("\n")) or "(none)", markup=False, highlight=False)


def attempts_table(attempts: Iterable[Attempt], fmt: str = "table") -> None:
    """A job's history: one row per attempt that ended (``queuectl logs ID --attempt N`` prints its
    output). A table that fits the terminal, or TSV in a pipe, like every table: drawn into a
    pipe's 80 columns it cut the worker id, pid and times."""
    from queuectl.cli.output import Column, emit

    optional = {"max rss": 1, "cpu": 2, "host": 3, "ended": 4, "claimed": 5, "duration": 6}
    names = ("#", "worker", "host", "pid", "claimed", "ended", "how", "exit", "duration", "max rss", "cpu", "error")
    columns = [Column(name, shrink=name == "error", drop=optional.get(name, 0)) for name in names]
    rows = []
    for row in attempts:
        exit_text = "-" if row.exit_code is None else str(row.exit_code)
        if row.signal:
            exit_text = f"signal {row.signal}"
        rows.append(
            [
                str(row.number),
                row.worker or "-",
                row.host or "-",
                "-" if row.pid is None else str(row.pid),
                when(row.claimed_at),
                when(row.ended_at),
                row.ended,
                exit_text,
                format_duration(row.duration),
                "-" if row.max_rss_kb is None else f"{row.max_rss_kb / 1024:.1f} MiB",
                "-" if row.cpu_s is None else f"{row.cpu_s:.2f}s",
                row.error or "-",
            ]
        )
    if fmt == "tsv":  # TSV has no title: where the output above ends, for a reader of the file
        print("attempts:", flush=True)
    emit(fmt, "attempts", columns, rows)


def _hook_text(job: Job) -> str:
    if not job.on_finish:
        return "-"
    status = job.hook_state or "not run yet"
    if job.hook_error:
        status += f": {job.hook_error}"
    return safe(f"{job.on_finish} ({status})")


def workers_table(
    workers: Iterable[WorkerInfo], config: RuntimeConfig, fmt: str = "table", now: Optional[float] = None
) -> None:
    """Workers with the liveness ``--json`` gives (``unresponsive``: silent for a lease, or dead)."""
    from queuectl.cli.output import Column, emit
    from queuectl.service.shapes import UNRESPONSIVE, worker_liveness

    now = now or time.time()
    tsv = fmt == "tsv"
    optional = {"slots": 1, "queues": 2, "pid": 3, "host": 4}
    names: tuple[str, ...] = ("id", "host", "pid", "state", "queues", "slots", "current jobs", "heartbeat")
    workers = list(workers)
    scaled = any(worker.scale for worker in workers)  # the column only when a supervisor autoscales
    if scaled:
        names += ("scale",)
        optional["scale"] = 5
    columns = [Column(name, shrink=name == "current jobs", drop=optional.get(name, 0)) for name in names]
    rows = []
    for worker in workers:
        state = worker_liveness(worker, config, now)
        rows.append(
            [
                worker.id,
                worker.host,
                str(worker.pid),
                (state, "red" if state == UNRESPONSIVE else ""),
                worker.queues,
                str(worker.concurrency),
                ",".join(worker.current_jobs) if tsv else (", ".join(worker.current_jobs) or "-"),
                when(worker.last_heartbeat) if tsv else ago(worker.last_heartbeat, now),
                *([worker.scale or "-"] if scaled else []),
            ]
        )
    emit(fmt, "workers", columns, rows)


def plain_table(
    fmt: str, title: str, headers: tuple[str, ...], rows: Iterable[tuple[str, ...]], shrink: tuple[str, ...] = ()
) -> None:
    """A table of plain text cells (user text is made printable on the way); the ``shrink``
    columns give way on a narrow terminal."""
    from queuectl.cli.output import Column, emit

    emit(fmt, title, [Column(header, shrink=header in shrink) for header in headers], [list(row) for row in rows])
