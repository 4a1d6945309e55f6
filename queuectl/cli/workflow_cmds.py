"""Workflow commands: wait for jobs, purge old jobs, and cron schedules."""

import sys
import time
from typing import List, Optional

import typer

from queuectl.cli.context import store_of
from queuectl.cli.output import format_option, json_option, pick_format, print_json
from queuectl.core.durations import format_duration, parse_duration
from queuectl.core.errors import EXIT_JOB_CANCELLED, EXIT_JOB_DEAD, EXIT_WAIT_TIMEOUT
from queuectl.core.models import CANCELLED, DEAD

schedule_app = typer.Typer(no_args_is_help=True)
PROGRESS_JOBS = 10_000  # a purge of this many jobs shows a progress bar (on a terminal only)


def wait(
    ctx: typer.Context,
    job_ids: Optional[List[str]] = typer.Argument(None, metavar="[ID]..."),
    timeout: Optional[str] = typer.Option(None, "--timeout", "-t", help="Give up after this long: 30s, 10m."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Every job of this enqueue --file batch."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="Until this queue has no unfinished job."),
) -> None:
    """Block until the jobs are finished: completed, dead or cancelled (a failed job waiting for
    its retry is not finished). Reads the queue every 50 ms at first, backing off to once a
    second; without --timeout it waits for ever.

    Prints "ID: state (exit code N)" per job. Exit codes: 0 all completed; 20 or 21 when a job
    ended dead or cancelled (the first such job, in the order given, decides); 22 --timeout
    passed (the states so far are printed); 3 an unknown id (at once, before waiting).

    --batch B: every job of an enqueue --file batch (0, 20 some dead, 21 some cancelled, 22).
    --queue Q: until Q holds no pending, waiting, held, processing or failed job; exit 0 (or 22),
    since the queue also holds older jobs whose end is not this wait's business.

    Example: queuectl wait parse --timeout 10m; queuectl wait --batch B
    """
    limit = None if timeout is None else parse_duration(timeout, "timeout")
    if batch is not None or queue is not None:
        if job_ids:
            from queuectl.core.errors import InvalidInput

            raise InvalidInput("wait: give job ids, --batch B or --queue Q, not several")
        return _wait_group(ctx, batch, queue, limit)
    if not job_ids:
        from queuectl.core.errors import InvalidInput

        raise InvalidInput("wait: give job ids, --batch B or --queue Q")
    from queuectl.service import jobs

    result = jobs.wait_for(store_of(ctx), job_ids, limit)
    for job in result.jobs:
        print(f"{job.id}: {job.state}" + ("" if job.exit_code is None else f" (exit code {job.exit_code})"))
    if result.timed_out:
        print(f"queuectl: still running after {format_duration(limit)}", file=sys.stderr)
        raise typer.Exit(EXIT_WAIT_TIMEOUT)
    for job in result.jobs:
        if job.state == DEAD:
            raise typer.Exit(EXIT_JOB_DEAD)
        if job.state == CANCELLED:
            raise typer.Exit(EXIT_JOB_CANCELLED)
    raise typer.Exit(0)


def _wait_group(ctx: typer.Context, batch: Optional[str], queue: Optional[str], limit: Optional[float]) -> None:
    from queuectl.service import handling

    result = handling.wait_for_group(store_of(ctx), batch, queue, limit)
    what = f"batch {batch}" if batch is not None else f"queue {queue}"
    if result.timed_out:
        left = ", ".join(sorted(result.left))
        print(f"queuectl: {what} still has {left} jobs after {format_duration(limit)}", file=sys.stderr)
        raise typer.Exit(EXIT_WAIT_TIMEOUT)
    ended = "some dead" if result.dead else "some cancelled" if result.cancelled else "all completed"
    print(f"{what}: finished" + (f" ({ended})" if batch is not None else ""))
    raise typer.Exit(EXIT_JOB_DEAD if result.dead else EXIT_JOB_CANCELLED if result.cancelled else 0)


def purge(
    ctx: typer.Context,
    states: List[str] = typer.Option(["completed"], "--state", "-s", help="completed, dead or cancelled; repeatable."),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Only jobs finished longer ago: 7d."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Without --older-than: delete them all, without asking."),
) -> None:
    """Delete finished jobs by state and age (in batches, so workers are never stalled).

    Without --older-than every job in those states goes: that takes --yes (or a yes on the terminal).

    Example: queuectl purge --state completed --older-than 7d
    """
    age = None if older_than is None else parse_duration(older_than, "older-than")
    from queuectl.service import jobs

    jobs.check_purgeable(states)
    if age is None and not yes and not dry_run:
        from queuectl.cli.output import confirm_or_refuse

        named = " and ".join(dict.fromkeys(states))
        confirm_or_refuse(
            f"Delete every {named} job, whatever its age?",
            f"purge without --older-than deletes every {named} job; "
            "add --older-than 7d to keep recent ones, or --yes to delete them all",
        )

    store, now = store_of(ctx), time.time()
    if dry_run:
        print(f"would delete {jobs.purge(store, states, age, now, dry_run=True)} job(s)")
        return
    from queuectl.cli.output import progress_bar

    # on a terminal, a purge of many jobs shows how far it got (counting them first is cheap)
    total = jobs.purge(store, states, age, now, dry_run=True) if sys.stderr.isatty() else None
    with progress_bar("purging", total, "jobs", show=(total or 0) >= PROGRESS_JOBS) as progress:
        count = jobs.purge(store, states, age, now, progress=progress)
    print(f"deleted {count} job(s)")


@schedule_app.command("add")
def schedule_add(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    cron: str = typer.Argument(..., help='Cron expression: "0 3 * * *" (a 6th field is seconds).'),
    command: str = typer.Argument(...),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="The queue of each job (default: default)."),
    tz: str = typer.Option("UTC", "--tz", help="IANA timezone the expression is read in: Europe/Berlin."),
    priority: Optional[int] = typer.Option(None, "--priority", "-p", help="Each job's priority (higher first)."),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Each job's retries before the DLQ."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="Kill each run after this long: 10m."),
    unique_key: Optional[str] = typer.Option(None, "--unique-key", help="Skip a fire while the last run is active."),
    label: Optional[List[str]] = typer.Option(None, "--label", "-l", metavar="K=V", help="A label on each job."),
    snooze_code: Optional[int] = typer.Option(
        None, "--snooze-code", metavar="CODE", help="A run exiting with CODE is re-queued uncounted."
    ),
    snooze_delay: Optional[str] = typer.Option(None, "--snooze-delay", help="How long a snoozed run waits: 5m."),
) -> None:
    """Enqueue COMMAND at every fire time of a cron expression (exactly once per fire time).

    Example: queuectl schedule add nightly "0 3 * * *" "./backup.sh" --queue ops --tz Europe/Berlin
    """
    spec = {
        "command": command,
        "queue": queue,
        "priority": priority,
        "max_retries": max_retries,
        "timeout": timeout,
        "unique_key": unique_key,
        "labels": label or None,
        "snooze_code": snooze_code,
        "snooze_delay": snooze_delay,
    }
    spec = {key: value for key, value in spec.items() if value is not None}
    from queuectl.service import schedules

    schedule = schedules.add_schedule(store_of(ctx), name, cron, spec, tz, time.time())
    from queuectl.cli.render import when

    print(f"added schedule {name}; next run {when(schedule.next_fire_at)}")


@schedule_app.command("list")
def schedule_list(ctx: typer.Context, as_json: bool = json_option(), fmt: Optional[str] = format_option()) -> None:
    """Every schedule with its next and last fire time.

    Example: queuectl schedule list
    """
    from queuectl.service.schedules import list_schedules

    chosen = pick_format(fmt, as_json)
    schedules = list_schedules(store_of(ctx))
    from queuectl.cli.render import plain_table, when

    if chosen == "json":
        from queuectl.service.shapes import schedule_json

        print_json([schedule_json(s) for s in schedules])
        return
    plain_table(
        chosen,
        "schedules",
        ("name", "cron", "tz", "command", "queue", "next", "last", "paused"),
        [
            (
                s.name,
                s.cron,
                s.tz,
                s.spec.get("command", ""),
                s.spec.get("queue", "default"),
                when(s.next_fire_at),
                when(s.last_fire_at),
                "yes" if s.paused else "no",
            )
            for s in schedules
        ],
        shrink=("command",),
    )


@schedule_app.command("remove")
def schedule_remove(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Delete a schedule (jobs it already enqueued stay).

    Example: queuectl schedule remove nightly
    """
    from queuectl.service.schedules import remove_schedule

    remove_schedule(store_of(ctx), name)
    print(f"removed schedule {name}")


@schedule_app.command("pause")
def schedule_pause(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Stop a schedule from firing until it is resumed.

    Example: queuectl schedule pause nightly
    """
    from queuectl.service.schedules import pause_schedule

    pause_schedule(store_of(ctx), name)
    print(f"paused schedule {name}")


@schedule_app.command("resume")
def schedule_resume(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Let a paused schedule fire again, from its next fire time after now.

    Example: queuectl schedule resume nightly
    """
    from queuectl.service import schedules

    schedules.resume_schedule(store_of(ctx), name, time.time())
    print(f"resumed schedule {name}")


def register(app: typer.Typer) -> None:
    app.command()(wait)
    app.command()(purge)
    app.add_typer(
        schedule_app,
        name="schedule",
        help="Cron schedules that enqueue jobs.",
        epilog='Example: queuectl schedule add nightly "0 3 * * *" "./backup.sh" --tz Europe/Berlin',
    )
