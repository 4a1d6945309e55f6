"""Commands that handle jobs by id or in bulk: cancel, rm, retry, hold, release, restart."""

import sys
from typing import Any, List, Optional

import typer

from queuectl.cli.context import store_of
from queuectl.cli.output import note
from queuectl.service import handling as service

_IDS = typer.Argument(None, metavar="[ID]...", help="The jobs; or select them with the filters below.")


def _state_option(allowed: str) -> Any:
    return typer.Option(None, "--state", "-s", help=f"Every job in this state ({allowed}); repeatable.")


def _queue_option() -> Any:
    return typer.Option(None, "--queue", "-q", help="Every job of this queue (with --state: of both).")


def _batch_option() -> Any:
    return typer.Option(None, "--batch", help="Every job of this enqueue --file batch.")


def _label_option() -> Any:
    return typer.Option(None, "--label", "-l", metavar="K=V", help="Every job with this label; repeatable (all).")


def _all_option(verb: str) -> Any:
    return typer.Option(False, "--all", help=f"{verb} every job it applies to (asks first; --yes in a script).")


def _yes_option() -> Any:
    return typer.Option(False, "--yes", "-y", help="With --all: do not ask.")


def _run_bulk(
    ctx: typer.Context,
    action: Any,
    verb: str,
    past: str,
    ids: Optional[List[str]],
    states: Optional[List[str]],
    queue: Optional[str],
    batch: Optional[str],
    labels: Optional[List[str]],
    everything: bool,
    yes: bool,
) -> None:
    selection = service.Selection(list(ids or []), list(states or []), queue, batch, everything, list(labels or []))
    if everything and not yes and not selection.ids and not selection.filtered:
        from queuectl.cli.output import confirm_or_refuse

        confirm_or_refuse(
            f"{verb.capitalize()} every job this applies to?",
            f"--all without --yes: add --yes to {verb} every job, or select some with --state/--queue",
        )
    result = action(store_of(ctx), selection)
    for job_id in result.done:
        print(f"{past} {job_id}")
    if result.errors:
        from queuectl.cli.render import printable

        for _, error in result.errors:
            print(f"queuectl: error: {printable(str(error))}", file=sys.stderr)
    if not selection.ids:
        note(f"{past} {len(result.done)} job(s)" + (f"; {result.skipped} changed meanwhile" if result.skipped else ""))
    if result.errors:
        raise typer.Exit(result.errors[0][1].exit_code)


def cancel(
    ctx: typer.Context,
    job_ids: Optional[List[str]] = _IDS,
    state: Optional[List[str]] = _state_option("pending, waiting, held, processing, failed"),
    queue: Optional[str] = _queue_option(),
    batch: Optional[str] = _batch_option(),
    label: Optional[List[str]] = _label_option(),
    everything: bool = _all_option("Cancel"),
    yes: bool = _yes_option(),
) -> None:
    """Cancel jobs: a waiting one never runs; a running one is killed at once (MongoDB: within a heartbeat).

    Example: queuectl cancel job1 job2; queuectl cancel --queue builds --state pending
    """
    _run_bulk(ctx, service.cancel_jobs, "cancel", "cancelled", job_ids, state, queue, batch, label, everything, yes)


def rm(
    ctx: typer.Context,
    job_ids: Optional[List[str]] = _IDS,
    state: Optional[List[str]] = _state_option("any but processing"),
    queue: Optional[str] = _queue_option(),
    batch: Optional[str] = _batch_option(),
    label: Optional[List[str]] = _label_option(),
    everything: bool = _all_option("Delete"),
    yes: bool = _yes_option(),
) -> None:
    """Delete jobs that are not running; one not finished is cancelled first (its dependants too).

    Example: queuectl rm job1 job2; queuectl rm --state cancelled
    """
    _run_bulk(ctx, service.remove_jobs, "remove", "removed", job_ids, state, queue, batch, label, everything, yes)


def retry(
    ctx: typer.Context,
    job_ids: Optional[List[str]] = _IDS,
    state: Optional[List[str]] = _state_option("dead"),
    queue: Optional[str] = _queue_option(),
    batch: Optional[str] = _batch_option(),
    label: Optional[List[str]] = _label_option(),
    everything: bool = _all_option("Retry"),
    yes: bool = _yes_option(),
) -> None:
    """Put dead jobs back to pending with their attempts reset (like dlq retry, for many).

    Example: queuectl retry job1 job2; queuectl retry --queue builds
    """
    _run_bulk(ctx, service.retry_jobs, "retry", "retried", job_ids, state, queue, batch, label, everything, yes)


def hold(ctx: typer.Context, job_ids: List[str] = typer.Argument(..., metavar="ID...")) -> None:
    """Keep pending, failed or waiting jobs back: they stay listed (state held) and no worker takes them.

    Example: queuectl hold job1; later queuectl release job1
    """
    for job_id in job_ids:
        service.hold_job(store_of(ctx), job_id)
        print(f"held {job_id}")


def release(ctx: typer.Context, job_ids: List[str] = typer.Argument(..., metavar="ID...")) -> None:
    """Let held jobs run again: pending, or waiting if a parent is unfinished now (cancelled if
    a parent ended so that it can never run).

    Example: queuectl release job1
    """
    for job_id in job_ids:
        state = service.release_job(store_of(ctx), job_id)
        print(f"released {job_id}" + ("" if state == "pending" else f" ({state})"))


def restart(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    command: Optional[str] = typer.Option(None, "--command", "-c", help="Run this command instead."),
    priority: Optional[int] = typer.Option(None, "--priority", "-p", help="A new priority."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="Another queue."),
    max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Retries before the DLQ."),
    timeout: Optional[str] = typer.Option(None, "--timeout", help="Kill it after this long: 10m."),
) -> None:
    """Run a completed, cancelled or dead job again under the same id, as it was or with edits;
    its old runs stay in its history (queuectl show ID). Only this job runs again: restart its
    dependants too if they should.

    Example: queuectl restart job1 --command "make -j4" --priority 5
    """
    edits = {"command": command, "priority": priority, "queue": queue, "max_retries": max_retries, "timeout": timeout}
    state = service.restart_job(store_of(ctx), job_id, edits)
    print(f"restarted {job_id}" + ("" if state == "pending" else f" ({state})"))


def register(app: typer.Typer) -> None:
    app.command()(cancel)
    app.command()(rm)
    app.command()(retry)
    app.command()(hold)
    app.command()(release)
    app.command()(restart)
