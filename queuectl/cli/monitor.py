"""Watching the queue: the live dashboard, a job's output (and following it), Prometheus metrics."""

import sys
from typing import Optional

import typer

from queuectl.cli.context import context_of, store_of
from queuectl.core.errors import EXIT_JOB_CANCELLED, EXIT_JOB_DEAD, EXIT_NOT_FOUND, InvalidInput, StoreUnavailable
from queuectl.core.lifecycle import FINISHED
from queuectl.core.models import Job
from queuectl.service import jobs as service
from queuectl.store import Store

OUTCOME_EXIT_CODES = {"dead": EXIT_JOB_DEAD, "cancelled": EXIT_JOB_CANCELLED}  # as queuectl wait


def dashboard(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit (also without a terminal)."),
    interval: float = typer.Option(1.0, "--interval", "-i", min=0.2, max=3600, help="Seconds between refreshes."),
) -> None:
    """Live full-screen view: counts, throughput, lag, workers, recent failures. q or Ctrl-C leaves.

    Example: queuectl dashboard --interval 2
    """
    from queuectl.cli.dashboard_live import run_dashboard
    from queuectl.store import redact_url

    run_dashboard(store_of(ctx), redact_url(context_of(ctx).db_url), interval, once)


def logs(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing new output until the job completes (exit 0), dies (20) or is cancelled (21).",
    ),
    interval: float = typer.Option(0.5, "--interval", min=0.05, max=60, help="With --follow: seconds between reads."),
    attempt: Optional[int] = typer.Option(
        None,
        "--attempt",
        "-a",
        min=1,
        help="Print the output of attempt N of the job's history (see queuectl show) instead.",
    ),
    as_json: bool = typer.Option(False, "--json", help="With --attempt: print that attempt as JSON, output included."),
    head: Optional[int] = typer.Option(None, "--head", min=0, metavar="N", help="Print only the first N lines kept."),
    tail: Optional[int] = typer.Option(
        None, "--tail", "-n", min=0, metavar="N", help="Print only the last N lines (with --follow: then follow)."
    ),
) -> None:
    """Print a job's captured output (stdout and stderr; the last output-limit bytes, 64 KiB by
    default), exactly as stored.

    Running jobs save their output at each heartbeat (config key heartbeat); --follow on the
    worker's own host reads it live. Each finished attempt keeps its own output (the latest
    attempt-outputs-kept of them): --attempt N.

    Example: queuectl logs k3v9q2mx7d --follow
    """
    store = store_of(ctx)
    out = sys.stdout
    if head is not None and tail is not None:
        raise InvalidInput("give --head or --tail, not both")
    if head is not None and follow:
        raise InvalidInput("--head reads the start of the output: it cannot be combined with --follow")
    if attempt is not None or as_json:
        if follow:
            raise InvalidInput("--follow reads the running attempt: it cannot be combined with --attempt or --json")
        if as_json and (head is not None or tail is not None):
            raise InvalidInput("--json prints the whole attempt: it cannot be combined with --head or --tail")
        _print_attempt(store, job_id, attempt, as_json, head, tail)
        return
    job = service.get_job(store, job_id)

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    def note(text: str) -> None:
        print(f"queuectl: {text}", file=sys.stderr, flush=True)

    if not follow:
        _print_output(job.output, head, tail)
        if job.state not in FINISHED:
            note(
                f"job {job.id} is {job.state}; its output so far is saved at each heartbeat "
                f"(use --follow to keep reading)"
            )
        return

    from queuectl.service.logtail import final_note
    from queuectl.service.logtail import follow as follow_job

    outage = [False]

    def on_error(exc: Exception) -> bool:
        if isinstance(exc, StoreUnavailable):
            if not outage[0]:
                note(f"cannot read the job ({exc}); retrying")
                outage[0] = True
            return True
        return False

    def read() -> Optional[Job]:
        latest = service.find_job(store, job_id)
        if outage[0]:
            note("reading again")
            outage[0] = False
        return latest

    from queuectl.service.livetail import opener

    last = follow_job(read, write, note, interval=interval, on_error=on_error, live=opener(store), tail=tail)
    if last is None:
        note(f"job {job_id} was deleted while following it")
        raise typer.Exit(EXIT_NOT_FOUND)
    if out.isatty() and last.output and not last.output.endswith("\n"):
        write("\n")
    note(final_note(last))
    if last.state in OUTCOME_EXIT_CODES:
        raise typer.Exit(OUTCOME_EXIT_CODES[last.state])


def _print_output(text: Optional[str], head: Optional[int], tail: Optional[int]) -> None:
    """The stored output, or its first/last lines (with a note when the output limit cut it)."""
    from queuectl.service.logtail import excerpt

    shown, dropped = excerpt(text, head, tail)
    if shown:
        sys.stdout.write(shown)
        if not shown.endswith("\n") and sys.stdout.isatty():
            sys.stdout.write("\n")
        sys.stdout.flush()
    if head is not None and dropped:
        print(
            f"queuectl: {dropped} earlier bytes were dropped (config output-limit): these are the first lines kept",
            file=sys.stderr,
        )


def _print_attempt(
    store: Store, job_id: str, number: Optional[int], as_json: bool, head: Optional[int], tail: Optional[int]
) -> None:
    from queuectl.service import history

    row = history.attempt(store, job_id, number)
    if as_json:
        from queuectl.cli.render import print_json

        print_json(history.attempt_dict(row, with_output=True))
        return
    if row.output is None:
        print(
            f"queuectl: attempt {row.number} of job {job_id} kept no output "
            "(it wrote none, or it is older than the attempt-outputs-kept latest)",
            file=sys.stderr,
        )
        return
    _print_output(row.output, head, tail)


def metrics(
    ctx: typer.Context,
    serve: Optional[int] = typer.Option(
        None,
        "--serve",
        metavar="PORT",
        min=0,
        max=65535,
        help="Serve the metrics over HTTP on 127.0.0.1:PORT until Ctrl-C (0: any free port).",
    ),
) -> None:
    """The queue's state in the Prometheus text format: jobs per state and queue, workers, lag, durations.

    Example: queuectl metrics --serve 9464
    """
    store = store_of(ctx)
    from queuectl.web import metrics as queue_metrics

    if serve is None:
        sys.stdout.write(queue_metrics.exposition(store))
        return
    queue_metrics.serve(store, serve)


def register(app: typer.Typer) -> None:
    app.command()(dashboard)
    app.command()(logs)
    app.command()(metrics)
