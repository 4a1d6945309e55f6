"""Dead letter queue commands: list, retry, purge."""

from typing import Optional

import typer

from queuectl.cli.context import store_of
from queuectl.cli.output import format_option, json_option, pick_format, print_json
from queuectl.core.errors import InvalidInput
from queuectl.service import dlq as service

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_dead(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=100000, help="At most this many, newest first."),
    as_json: bool = json_option(),
    fmt: Optional[str] = format_option(),
) -> None:
    """Jobs that ran out of retries.

    Example: queuectl dlq list
    """
    chosen = pick_format(fmt, as_json)
    jobs = service.list_dead(store_of(ctx), limit)
    if chosen == "json":
        from queuectl.service.deps import waits_for
        from queuectl.service.shapes import jobs_json

        print_json(jobs_json(jobs, waits_for(store_of(ctx), jobs)))  # dead jobs wait for nothing: no read
    else:
        from queuectl.cli.render import jobs_table

        jobs_table(jobs, f"dead letter queue: {len(jobs)} shown", chosen)


@app.command()
def retry(
    ctx: typer.Context,
    job_id: Optional[str] = typer.Argument(None, metavar="ID"),
    all_jobs: bool = typer.Option(False, "--all", help="Retry every job in the DLQ."),
) -> None:
    """Put a dead job (or all of them) back to pending, attempts reset.

    Example: queuectl dlq retry job1
    """
    if (job_id is None) == (not all_jobs):
        raise InvalidInput("give a job id or --all (not both)")
    count = service.retry(store_of(ctx), job_id)
    print(f"requeued {job_id}" if job_id else f"requeued {count} job(s)")


@app.command()
def purge(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete every job in the DLQ.

    Example: queuectl dlq purge --yes
    """
    if not yes:
        from queuectl.cli.output import confirm_or_refuse

        confirm_or_refuse(
            "Delete every job in the dead letter queue?",
            "dlq purge deletes every dead job; add --yes to confirm (there is no terminal to ask on)",
        )
    import sys

    from queuectl.cli.output import progress_bar
    from queuectl.cli.workflow_cmds import PROGRESS_JOBS

    store = store_of(ctx)
    total = service.count_dead(store) if sys.stderr.isatty() else None
    with progress_bar("purging", total, "jobs", show=(total or 0) >= PROGRESS_JOBS) as progress:
        print(f"deleted {service.purge_dead(store, progress)} job(s)")
