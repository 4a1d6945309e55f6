"""Job commands: enqueue, list, show, status (cancel and the other verbs: handling_cmds)."""

import io
import os
import sys
import time
from typing import Any, Callable, List, Optional

import typer

from queuectl.cli.context import store_of
from queuectl.cli.output import format_option, json_option, note, pick_format, print_json
from queuectl.core.defaults import MAX_LINE_BYTES
from queuectl.core.errors import InvalidInput
from queuectl.core.models import STATES
from queuectl.service import jobs as service
from queuectl.service import observe

PROGRESS_BYTES = 1 << 20  # an input this big shows a progress bar (on a terminal only)


def enqueue(
    ctx: typer.Context,
    spec: Optional[str] = typer.Argument(
        None,
        metavar="COMMAND|JSON",
        help='A shell command ("echo hi") or a JSON job ({"command": "...", "max_retries": 5}).',
    ),
    file: Optional[str] = typer.Option(
        None, "--file", "-f", help="Enqueue one job per line of FILE (- for stdin), all or nothing."
    ),
    job_id: Optional[str] = typer.Option(None, "--id", help="Your own job id (default: generated)."),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Retries before the DLQ."),
    priority: Optional[int] = typer.Option(None, "--priority", "-p", help="Higher runs first (default 0)."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="Queue name (default: default)."),
    delay: Optional[str] = typer.Option(None, "--delay", help="Run no sooner than this: 30s, 15m, 2h, 1d."),
    run_at: Optional[str] = typer.Option(None, "--run-at", help="Run no sooner than this ISO-8601 time."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="Kill the job after this long: 10m."),
    cwd: Optional[str] = typer.Option(None, "--cwd", help="Working directory for the command."),
    env: Optional[List[str]] = typer.Option(None, "--env", "-e", help="KEY=VALUE for the job; repeatable."),
    label: Optional[List[str]] = typer.Option(
        None, "--label", "-l", metavar="K=V", help="A label to filter by (list/cancel/rm --label); repeatable."
    ),
    after: Optional[List[str]] = typer.Option(
        None, "--after", help="Run only after this job completed; repeatable (waits for all)."
    ),
    on_failure_of: Optional[str] = typer.Option(
        None, "--on-failure-of", metavar="ID", help="Compensation: run only if job ID ends dead or cancelled."
    ),
    unique_key: Optional[str] = typer.Option(
        None, "--unique-key", help="Refuse while another job with this key is active."
    ),
    on_finish: Optional[str] = typer.Option(
        None, "--on-finish", metavar="CMD", help="Hook run after the final outcome, with QUEUECTL_JOB_* set."
    ),
    backoff_base: Optional[float] = typer.Option(
        None, "--backoff-base", help="This job's retry delay is BASE ** attempts seconds (config: backoff-base)."
    ),
    backoff_max: Optional[str] = typer.Option(None, "--backoff-max", help="Cap of one retry delay: 10m."),
    retry_on: Optional[str] = typer.Option(
        None, "--retry-on", metavar="CODES", help="Retry only these exit codes (75,111); others go dead."
    ),
    no_retry_on: Optional[str] = typer.Option(
        None, "--no-retry-on", metavar="CODES", help="Never retry these exit codes (2); they go dead at once."
    ),
    snooze_code: Optional[int] = typer.Option(
        None,
        "--snooze-code",
        metavar="CODE",
        help="Exiting with CODE re-queues it uncounted (config: snooze-exit-code).",
    ),
    snooze_delay: Optional[str] = typer.Option(
        None, "--snooze-delay", help="How long a snoozed run waits: 5m (config: snooze-delay)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="Print no job id (--file: print only the batch id)."),
) -> None:
    """Add a job; prints its id (--file: one id per line; the batch id is on stderr).

    Example: queuectl enqueue "echo hi" --priority 5 --delay 30s
    """
    options: dict[str, Any] = {
        "id": job_id,
        "max_retries": max_retries,
        "priority": priority,
        "queue": queue,
        "delay": delay,
        "run_at": run_at,
        "timeout": timeout,
        "cwd": os.path.abspath(cwd) if cwd else cwd,  # relative to where it was typed, not to a worker
        "env": env or None,
        "labels": label or None,
        "backoff_base": backoff_base,
        "backoff_max": backoff_max,
        "retry_on": retry_on,
        "no_retry_on": no_retry_on,
        "snooze_code": snooze_code,
        "snooze_delay": snooze_delay,
        "after": after or None,
        "on_failure_of": on_failure_of,
        "unique_key": unique_key,
        "on_finish": on_finish,
    }
    options = {key: value for key, value in options.items() if value is not None}
    store = store_of(ctx)
    if file is not None:
        if spec is not None:
            raise InvalidInput("give either a command or --file, not both")
        if "id" in options:
            raise InvalidInput("--id cannot apply to a whole file; put ids in the JSON lines")
        batch = service.new_batch_id()
        with _IdSpool() as ids:
            count = _enqueue_file(store, file, options, None if quiet else ids.append, batch)
            if quiet:
                sys.stdout.write(f"{batch}\n")
            else:
                ids.write_to(sys.stdout)
        note(f"enqueued {count} job(s) as batch {batch}" + (f"; queuectl wait --batch {batch}" if count else ""))
        return
    if spec is None:
        raise InvalidInput('nothing to enqueue: give a command, e.g. queuectl enqueue "echo hi", or --file FILE')
    job = service.enqueue_command(store, spec, options)
    if not quiet:
        print(job)


class _IdSpool:
    """The ids of an ``enqueue --file``, kept until it has committed (all or nothing: none is
    printed before) in a temporary file rather than a list: 1,000,000 ids as str objects took
    ~65 MB of memory, here 11 MB of file (in memory up to 1 MiB), streamed out at the end."""

    def __init__(self) -> None:
        import tempfile

        self._file = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b")  # a private file past that
        self._pending: list[str] = []

    def __enter__(self) -> "_IdSpool":
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def append(self, job_id: str) -> None:
        self._pending.append(job_id)
        if len(self._pending) >= 4096:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._file.write(("\n".join(self._pending) + "\n").encode())
            self._pending.clear()

    def write_to(self, out: Any) -> None:
        self._flush()
        self._file.seek(0)
        for chunk in iter(lambda: self._file.read(1 << 16), b""):
            out.write(chunk.decode("ascii"))  # job ids are ASCII


def _enqueue_file(
    store: Any, path: str, options: dict[str, Any], ids: Optional[Callable[[str], object]], batch: str
) -> int:
    from queuectl.cli.output import progress_bar

    if path == "-" or (os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path)):
        # a pipe may be slow: read it all first, so the write transaction never waits on it
        spool, size, lines = _spooled(sys.stdin.buffer if path == "-" else open(path, "rb"))
        with spool, progress_bar("enqueueing", lines, "lines", show=size >= PROGRESS_BYTES) as progress:
            try:
                return service.enqueue_stream(
                    store, io.TextIOWrapper(spool, encoding="utf-8"), options, progress, ids, batch
                )
            except UnicodeDecodeError:
                raise InvalidInput("the input is not UTF-8 text; nothing was enqueued") from None
    try:
        with open(path, encoding="utf-8", errors="strict") as handle:
            big = sys.stderr.isatty() and os.fstat(handle.fileno()).st_size >= PROGRESS_BYTES
            with progress_bar("enqueueing", _count_lines(path) if big else None, "lines", show=big) as progress:
                return service.enqueue_stream(store, handle, options, progress, ids, batch)
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not a file of jobs") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text; nothing was enqueued") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None


def _count_lines(path: str) -> int:
    """Lines of a file, for the progress bar's total (one quick binary pass)."""
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def _spooled(source: Any) -> tuple[Any, int, int]:
    """Copy a stream into a temporary file (in memory up to 8 MiB) and rewind it; returns the
    file, its size and its number of lines."""
    import tempfile

    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    size = lines = 0
    try:
        # line by line, bounded: a line past the limit is refused as soon as it passes it
        while line := source.readline(MAX_LINE_BYTES + 1):
            if len(line) > MAX_LINE_BYTES:
                raise InvalidInput(f"a line of the input is over {MAX_LINE_BYTES // 1024} KiB; nothing was enqueued")
            spool.write(line)
            size += len(line)
            lines += 1
    except UnicodeDecodeError:
        raise InvalidInput("the input is not UTF-8 text; nothing was enqueued") from None
    spool.seek(0)
    return spool, size, lines


def list_jobs(
    ctx: typer.Context,
    state: Optional[List[str]] = typer.Option(
        None, "--state", "-s", help=f"Only these states; repeatable. One of: {', '.join(STATES)}."
    ),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="Only this queue."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Only the jobs of this enqueue --file batch."),
    label: Optional[List[str]] = typer.Option(
        None, "--label", "-l", metavar="K=V", help="Only jobs with this label; repeatable (all of them)."
    ),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=100000, help="At most this many, newest first."),
    as_json: bool = json_option(),
    fmt: Optional[str] = format_option(),
) -> None:
    """List jobs, newest first (a table on a terminal, tab-separated rows in a pipe).

    Example: queuectl list --state failed --state dead --limit 20
    """
    chosen = pick_format(fmt, as_json)
    page = service.list_jobs(store_of(ctx), states=state, queue=queue, limit=limit, batch=batch, labels=label)
    shown = f"{len(page.jobs):,} of {page.matched:,} shown; --limit N for more" if page.matched > len(page.jobs) else ""
    from queuectl.service.deps import waits_for

    waits = waits_for(store_of(ctx), page.jobs)
    if chosen == "json":
        from queuectl.service.shapes import jobs_json

        print_json(jobs_json(page.jobs, waits))
    else:
        from queuectl.cli.render import jobs_table

        which = f" ({', '.join(dict.fromkeys(state))})" if state else ""
        title = f"jobs{which}: {shown or f'{len(page.jobs):,} shown'}"
        jobs_table(page.jobs, title, chosen, waits=waits)
        if chosen == "table":
            return
    if shown:
        note(shown)


def show(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = json_option(),
) -> None:
    """Everything about one job, with its output tail and last error.

    Example: queuectl show job1
    """
    from queuectl.service import deps, history

    store = store_of(ctx)
    job = service.get_job(store, job_id)
    runs = history.attempts(store, job_id)
    if as_json:
        from queuectl.service.shapes import job_json

        # the job's one shape; tree --json has its chain
        print_json(job_json(job, attempts=runs, waits=deps.waits_for(store, [job])))
        return
    from queuectl.cli.render import attempts_table, job_detail

    job_detail(job, history.progress_text(job), deps.relatives(store, job_id))
    if runs:
        attempts_table(runs, pick_format(None, False))  # TSV in a pipe, whole


def status(
    ctx: typer.Context,
    as_json: bool = json_option(),
    fmt: Optional[str] = format_option(),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place every 2 s until q or Ctrl-C."),
) -> None:
    """Jobs per state summed over every queue (--json has each queue too), how many workers are
    alive (heartbeat within a lease), each autoscaling range with its workers now, and the paused
    queues. One read of indexed counts: as fast on a million jobs as on ten.

    Not a list of jobs (see list) or of workers (see worker list); --watch redraws it every 2 s.

    Example: queuectl status --watch
    """
    chosen = pick_format(fmt, as_json)
    if watch:
        from queuectl.cli.dashboard_live import watch_status

        return watch_status(store_of(ctx))
    now = time.time()
    summary = observe.status(store_of(ctx), now)
    if chosen == "json":
        from queuectl.service.shapes import status_json

        print_json(status_json(summary.rows, summary.workers_alive, summary.workers_total, summary.autoscaling))
        return
    from queuectl.cli.output import Column, emit
    from queuectl.cli.render import STATE_STYLES

    rows = [[(s, STATE_STYLES[s]), str(summary.states.get(s, 0))] for s in STATES]
    rows.append(["total", str(sum(summary.states.values()))])
    if chosen == "tsv":
        # what the terminal prints below the table, as rows of the same two columns: `status |
        # grep workers` finds it, and a row is there (empty) even with no queue paused
        rows.append(["workers alive", str(summary.workers_alive)])
        rows += [[f"autoscaling {scale} on {host}", str(alive)] for host, scale, alive in summary.autoscaling]
        rows.append(["paused queues", ",".join(sorted(summary.paused))])
    emit(chosen, "jobs", [Column("state"), Column("count", justify="right")], rows)
    if chosen == "tsv":
        return
    print(f"workers alive: {summary.workers_alive}")
    for host, scale, alive in summary.autoscaling:
        print(f"autoscaling {scale} on {host}: {alive} worker(s) now")
    if summary.paused:
        print(f"paused queues: {', '.join(sorted(summary.paused))}")


def register(app: typer.Typer) -> None:
    app.command()(enqueue)
    app.command("list")(list_jobs)
    app.command()(show)
    app.command()(status)
