"""The dashboard on screen: a snapshot rendered with Rich (and ``status`` as ``--watch`` shows it).

Imported only by the commands that draw (``dashboard``, ``status --watch``), so Rich is loaded only
there. :func:`render` is a pure function of a snapshot, so tests render it to a recording console;
the live loop around it is :mod:`queuectl.cli.dashboard_live`.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from queuectl.cli.render import STATE_STYLES, printable
from queuectl.core.durations import format_duration
from queuectl.core.models import STATES
from queuectl.service.dashboard import BUCKET_S, BUCKETS, History, Snapshot, sparkline
from queuectl.store import Store

WIDE = 120  # columns from which the wide layout is used


# --- small formatting helpers ---------------------------------------------------------------------


def _num(value: int) -> str:
    return f"{value:,}"


def _ago(seconds: float) -> str:
    return f"{format_duration(seconds)} ago"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _middle_ellipsis(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    keep = max(1, width - 1)
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2) :]


def _delta(value: int) -> Text:
    if value == 0:
        return Text("·", style="dim")
    return Text(f"{value:+,}", style="bold")


# --- sections -----------------------------------------------------------------------------------


def _header(snapshot: Optional[Snapshot], source: str, width: int, interval: Optional[float]) -> Table:
    grid = Table.grid(expand=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_column(justify="right", no_wrap=True)
    right = []
    if snapshot is not None:
        right.append(_clock(snapshot.at))
        if interval is not None:
            right.append(f"every {interval:g}s")
        right.append(f"read {snapshot.elapsed * 1000:.0f}ms")
    if interval is not None:
        right.append("q quits")
    right_text = " · ".join(right)
    left = Text("queuectl dashboard", style="bold")
    room = width - len(right_text) - len("queuectl dashboard") - 4
    if source and room > 10:
        left.append("  " + _middle_ellipsis(printable(source), room), style="dim")
    grid.add_row(left, Text(right_text, style="dim"))
    return grid


def _banner(error: str, snapshot: Optional[Snapshot], interval: Optional[float], now: float) -> Text:
    text = Text(f" database unavailable: {printable(error)} ", style="bold white on red")
    if snapshot is not None:
        text.append(f"\n showing data read at {_clock(snapshot.at)} ({_ago(now - snapshot.at)})", style="red")
    else:
        text.append("\n no data yet", style="red")
    if interval is not None:
        text.append(f"; retrying every {interval:g}s ", style="red")
    return text


def _state_names(snapshot: Snapshot) -> list[str]:
    return list(STATES) + sorted(set(snapshot.states) - set(STATES))


def _jobs_table(snapshot: Snapshot, history: Optional[History], show_change: bool) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    table.add_column("jobs", style="bold", no_wrap=True)
    names = _state_names(snapshot)
    for name in names:
        table.add_column(
            Text(printable(name), style=f"bold {STATE_STYLES.get(name, '')}"), justify="right", no_wrap=True
        )
    table.add_row("now", *(_num(snapshot.states.get(name, 0)) for name in names))
    if show_change:
        change = history.change(snapshot) if history is not None else None
        if change is None:
            table.add_row(Text("Δ 1m", style="dim"), *(Text("…", style="dim") for _ in names))
        else:
            deltas, span = change
            label = "Δ 1m" if span >= 55 else f"Δ {span:.0f}s"
            table.add_row(label, *(_delta(deltas.get(name, 0)) for name in names))
    return table


def _summary(snapshot: Snapshot) -> Text:
    """One line, the most important first (a narrow terminal cuts the end)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("lag ")
    if snapshot.lag is not None:
        style = "bold red" if snapshot.lag > 60 else "yellow" if snapshot.lag > 10 else "green"
        text.append(format_duration(snapshot.lag), style=style)
    else:
        text.append("0s", style="green")
    text.append(" · DLQ ")
    text.append(_num(snapshot.dlq), style="bold red" if snapshot.dlq else "green")
    text.append(" · workers ")
    text.append(f"{snapshot.workers_alive} alive", style="green" if snapshot.workers_alive else "yellow")
    listed = snapshot.workers_unresponsive - snapshot.workers_gone  # as the workers section counts
    if listed:
        text.append(f", {listed} unresponsive", style="bold red")
    if snapshot.workers_gone:
        text.append(f", {snapshot.workers_gone} dead", style="red")
    if snapshot.paused:
        text.append(" · paused: ")
        text.append(printable(", ".join(snapshot.paused)), style="bold yellow")
    if snapshot.lag is None and snapshot.next_due_in is not None:
        text.append(f" · next due in {format_duration(snapshot.next_due_in)}", style="dim")
    return text


def _throughput(snapshot: Snapshot, wide: bool) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    scale = max(snapshot.completed_per_bucket + snapshot.failed_per_bucket + [0])
    repeat = 2 if wide else 1
    minutes = int(BUCKETS * BUCKET_S // 60)
    for label, values, style in (
        ("completed/min", snapshot.completed_per_bucket, "green"),
        ("failed/min", snapshot.failed_per_bucket, "magenta"),
    ):
        line = "".join(block * repeat for block in sparkline(values, scale))
        grid.add_row(
            Text(label, style="bold"),
            Text(line, style=style),
            Text(f"{_num(values[-1])} this min · {_num(sum(values))} in {minutes}m", style="dim"),
        )
    if wide:
        span = BUCKETS * repeat
        grid.add_row("", Text(f"-{minutes}m".ljust(span - 3) + "now", style="dim"), "")
    return grid


def _queues_table(snapshot: Snapshot, max_rows: int) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, title_justify="left")
    table.add_column("queue", style="bold", no_wrap=True, overflow="ellipsis", max_width=20)
    shown_states = [s for s in _state_names(snapshot) if s not in ("completed", "cancelled")]
    for name in shown_states:
        table.add_column(
            Text(printable(name), style=f"bold {STATE_STYLES.get(name, '')}"), justify="right", no_wrap=True
        )
    names = sorted(set(snapshot.queues) | set(snapshot.paused))
    for index, queue in enumerate(names):
        if index == max_rows - 1 and len(names) > max_rows:
            table.add_row(Text(f"… {len(names) - index} more", style="dim"))
            break
        label = Text(printable(queue))
        if queue in snapshot.paused:
            label.append(" ⏸", style="bold yellow")
        counts = snapshot.queues.get(queue, {})
        table.add_row(label, *(_num(counts.get(s, 0)) for s in shown_states))
    return table


def labels_text(labels: dict[str, str], width: int) -> str:
    """``team=infra,env=prod`` in at most ``width`` characters: whole pairs while they fit, then
    ``+N`` for the rest; a first pair too long for the room is cut with an ellipsis."""
    pairs = [printable(f"{key}={value}") for key, value in labels.items()]
    shown: list[str] = []
    for index, pair in enumerate(pairs):
        rest = len(pairs) - index - 1
        more = f",+{rest}" if rest else ""
        text = ",".join([*shown, pair])
        if len(text) + len(more) <= width:
            shown.append(pair)
            continue
        if not shown:  # not even the first pair: cut it
            room = max(1, width - len(f",+{rest}" if rest else "") - 1)
            return pair[:room] + "…" + (f",+{rest}" if rest else "")
        return ",".join(shown) + f",+{len(pairs) - index}"
    return ",".join(shown)


def _jobs_cell(worker: Any, wide: bool) -> Text:
    parts = []
    for job in worker.jobs:
        if job.running_for is not None:
            part = f"{job.id} {format_duration(job.running_for)}"
            if job.progress:
                part += f" {job.progress}"
        else:
            part = f"{job.id} ({job.elsewhere})" if job.elsewhere else job.id
        if job.labels:
            part += f" [{labels_text(job.labels, 32 if wide else 20)}]"
        if wide and job.command and len(worker.jobs) == 1:
            part += f"  {job.command}"
        parts.append(printable(part))
    return Text(", ".join(parts)) if parts else Text("idle", style="dim")


def _workers_section(snapshot: Snapshot, wide: bool, max_rows: Optional[int]) -> RenderableType:
    title = Text("workers", style="bold", no_wrap=True, overflow="ellipsis")
    title.append(f"  {snapshot.workers_alive} alive", style="green" if snapshot.workers_alive else "dim")
    if snapshot.workers_gone:  # first: the explanation after it may be cut on a narrow terminal
        title.append(f" · {snapshot.workers_gone} dead (not listed)", style="red")
    listed = snapshot.workers_unresponsive - snapshot.workers_gone
    if listed:
        title.append(
            f" · {listed} unresponsive (silent for over the {format_duration(snapshot.lease)} lease)",
            style="bold red",
        )
    if snapshot.workers_stopped:
        title.append(f" · {snapshot.workers_stopped} stopped", style="dim")
    if not snapshot.workers:
        return Group(title, Text("  no workers running; start some with: queuectl worker start", style="dim"))
    table = Table(box=None, padding=(0, 1), pad_edge=False, expand=True, header_style="bold")
    if wide:
        table.add_column("worker", no_wrap=True)
    table.add_column("host:pid", no_wrap=True, overflow="ellipsis", max_width=28 if wide else 20)
    table.add_column("state", no_wrap=True)
    table.add_column("heartbeat", no_wrap=True, justify="right")
    if wide:
        table.add_column("queues", no_wrap=True, overflow="ellipsis", max_width=20)
        table.add_column("slots", no_wrap=True, justify="right")
    table.add_column("current job(s) and running time", no_wrap=True, overflow="ellipsis", ratio=1)
    rows = snapshot.workers
    if max_rows is not None and len(rows) > max_rows:
        rows = rows[: max(0, max_rows - 1)]
    for worker in rows:
        state = Text("unresponsive", style="bold red") if worker.unresponsive else Text(printable(worker.state))
        cells: list[Any] = []
        if wide:
            cells.append(Text(printable(worker.id)))
        cells += [Text(printable(f"{worker.host}:{worker.pid}")), state, _ago(worker.heartbeat_age)]
        if wide:
            cells += [Text(printable(worker.queues)), f"{len(worker.jobs)}/{worker.concurrency}"]
        cells.append(_jobs_cell(worker, wide))
        table.add_row(*cells, style="red" if worker.unresponsive else None)
    hidden = len(snapshot.workers) - len(rows)
    if hidden:
        table.add_row(Text(f"… {hidden} more", style="dim"))
    return Group(title, table)


def _failures_section(snapshot: Snapshot, wide: bool, max_rows: Optional[int]) -> RenderableType:
    title = Text("recent failures", style="bold", no_wrap=True, overflow="ellipsis")
    title.append("  DLQ ", style="dim")
    title.append(_num(snapshot.dlq), style="bold red" if snapshot.dlq else "dim")
    if not snapshot.failures:
        return Group(title, Text("  none", style="dim"))
    table = Table(box=None, padding=(0, 1), pad_edge=False, expand=True, header_style="bold")
    table.add_column("job", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("tries", no_wrap=True, justify="right")
    table.add_column("when", no_wrap=True, justify="right")
    if wide:
        table.add_column("queue", no_wrap=True, overflow="ellipsis", max_width=16)
        table.add_column("command", no_wrap=True, overflow="ellipsis", ratio=1)
    labelled = any(failure.labels for failure in snapshot.failures)  # a column only when some have labels
    if labelled:
        table.add_column("labels", no_wrap=True, overflow="ellipsis", max_width=32 if wide else 16)
    table.add_column("last error", no_wrap=True, overflow="ellipsis", ratio=2 if wide else 1)
    rows = snapshot.failures if max_rows is None else snapshot.failures[: max(1, max_rows)]
    for failure in rows:
        state = Text(printable(failure.state), style=STATE_STYLES.get(failure.state, ""))
        when = _ago(failure.age)
        if wide and failure.retry_in is not None:
            when += f", retry in {format_duration(failure.retry_in)}"
        cells: list[Any] = [Text(printable(failure.id)), state, f"{failure.attempts}/{failure.max_attempts}", when]
        if wide:
            cells += [Text(printable(failure.queue)), Text(printable(failure.command))]
        if labelled:
            cells.append(Text(labels_text(failure.labels, 32 if wide else 16) or "-", style="dim"))
        error = Text(printable(failure.error) or "-", style="red" if failure.state == "dead" else "")
        if failure.last_output:
            error.append(f"  {printable(failure.last_output)}", style="dim")
        cells.append(error)
        table.add_row(*cells)
    return Group(title, table)


def _fits_side_by_side(left: RenderableType, right: RenderableType, width: int) -> bool:
    import io

    from rich.measure import Measurement

    console = Console(width=width, file=io.StringIO())
    needed = sum(Measurement.get(console, console.options, part).maximum for part in (left, right))
    return needed + 6 <= width


# --- the whole view -----------------------------------------------------------------------------


def render(
    snapshot: Optional[Snapshot],
    history: Optional[History] = None,
    *,
    width: int = 80,
    height: Optional[int] = None,
    error: Optional[str] = None,
    source: str = "",
    interval: Optional[float] = None,
    now: Optional[float] = None,
) -> RenderableType:
    """The dashboard for ``width`` columns (and at most ``height`` lines, when given).

    ``interval`` is set in the live view (it is shown, with the key hint and the Δ row);
    ``error`` (the last refresh failed) shows as a red banner above the last good data.
    """
    now = time.time() if now is None else now
    wide = width >= WIDE
    live = interval is not None
    parts: list[RenderableType] = [_header(snapshot, source, width, interval)]
    used = 1
    if error is not None:
        parts.append(_banner(error, snapshot, interval, now))
        used += 1 + -(-(len(error) + 25) // max(1, width))  # the error may wrap
    if snapshot is None:
        return Group(*parts)

    jobs = _jobs_table(snapshot, history, show_change=live)
    summary = _summary(snapshot)
    throughput = _throughput(snapshot, wide)
    top_lines = (3 if live else 2) + 1 + 1 + 2 + (1 if wide else 0)
    top: list[RenderableType] = [jobs, summary, Text(""), throughput]
    queue_count = len(set(snapshot.queues) | set(snapshot.paused))
    if queue_count:
        beside = _queues_table(snapshot, max_rows=top_lines - 1)
        lower = 6 + max(1, min(len(snapshot.workers), 4)) + max(1, min(len(snapshot.failures), 5))
        spare = None if height is None else height - used - top_lines - lower
        if wide and _fits_side_by_side(Group(*top), beside, width):
            grid = Table.grid(padding=(0, 6))
            grid.add_column()
            grid.add_column()
            grid.add_row(Group(*top), beside)
            top = [grid]
        elif spare is None or spare >= 3:
            rows = queue_count if spare is None else min(queue_count, spare - 2)
            top += [Text(""), _queues_table(snapshot, max_rows=rows)]
            top_lines += 2 + min(rows, queue_count)
    parts += top
    used += top_lines

    # the rest of the height goes to workers and failures: titles, headers, a blank between
    worker_rows = failure_rows = None
    if height is not None:
        available = max(0, height - used - 1 - 2 - 1 - 2)
        wanted_failures = min(len(snapshot.failures), 5)
        worker_rows = max(2, min(len(snapshot.workers), available - max(1, wanted_failures)))
        failure_rows = max(1, min(wanted_failures, available - min(len(snapshot.workers), worker_rows)))
    parts += [
        Text(""),
        _workers_section(snapshot, wide, worker_rows),
        Text(""),
        _failures_section(snapshot, wide, failure_rows),
    ]
    return Group(*parts)


# --- status --watch -----------------------------------------------------------------------------


def status_view(store: Store, now: Optional[float] = None) -> RenderableType:
    """What ``queuectl status`` prints, as one renderable (for ``status --watch``)."""
    from queuectl.service import observe

    now = time.time() if now is None else now
    summary = observe.status(store, now)
    table = Table(title="jobs", title_justify="left")
    table.add_column("state")
    table.add_column("count")
    for name in list(STATES) + sorted(set(summary.states) - set(STATES)):
        table.add_row(Text(printable(name), style=STATE_STYLES.get(name, "")), str(summary.states.get(name, 0)))
    lines: list[RenderableType] = [table, Text(f"workers alive: {summary.workers_alive}")]
    if summary.paused:
        lines.append(Text(printable(f"paused queues: {', '.join(sorted(summary.paused))}")))
    return Group(*lines)
