"""Named queues: per-queue counts, pause, resume."""

from typing import Optional

import typer

from queuectl.cli.context import store_of
from queuectl.cli.output import format_option, json_option, pick_format, print_json
from queuectl.core.models import STATES
from queuectl.service import queues as service

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = json_option(), fmt: Optional[str] = format_option()) -> None:
    """Every queue with its job counts, whether it is paused, and its limit and rate.

    Example: queuectl queue list
    """
    chosen = pick_format(fmt, as_json)
    rows = service.list_queues(store_of(ctx))
    if chosen == "json":
        from queuectl.service.shapes import queue_json

        print_json([queue_json(row) for row in rows])
        return
    from queuectl.cli.output import Column, emit

    # on a narrow terminal the counts read least often are left out first; the name never is
    optional = {"cancelled": 1, "waiting": 2, "completed": 3, "dead": 4, "failed": 5}
    columns = [Column("queue"), Column("paused"), Column("limit", drop=6), Column("rate", drop=6)]
    columns += [Column(state, justify="right", drop=optional.get(state, 0)) for state in STATES]
    emit(chosen, "queues", columns, [_row(row) for row in rows])


def _row(row: service.QueueRow) -> list[str]:
    gates = [str(row.limit) if row.limit else "-", row.rate or "-"]
    return [row.name, "yes" if row.paused else "no", *gates, *(str(row.states.get(s, 0)) for s in STATES)]


@app.command()
def show(ctx: typer.Context, name: str = typer.Argument(...), as_json: bool = json_option()) -> None:
    """One queue: paused or not, its limit and rate, and its jobs per state.

    Example: queuectl queue show builds
    """
    row = service.get_queue(store_of(ctx), name)
    if as_json:
        from queuectl.service.shapes import queue_json

        print_json(queue_json(row))
        return
    counts = ", ".join(f"{state} {row.states[state]}" for state in STATES if row.states.get(state))
    print(f"queue:   {row.name}")
    print(f"paused:  {'yes' if row.paused else 'no'}")
    print(f"limit:   {f'at most {row.limit} running at once' if row.limit else 'none'}")
    print(f"rate:    {f'at most {row.rate} claims started' if row.rate else 'none'}")
    print(f"jobs:    {counts or 'none'}")


@app.command()
def pause(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    create: bool = typer.Option(False, "--create", help="Pause a queue that has no job yet."),
) -> None:
    """Stop new claims from a queue on every worker; running jobs finish.

    A name that is no queue yet (a typo, say) is refused unless --create is given.

    Example: queuectl queue pause builds
    """
    service.set_paused(store_of(ctx), name, True, create=create)
    print(f"paused {name}")


@app.command()
def resume(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Let workers claim from a paused queue again.

    Example: queuectl queue resume builds
    """
    service.set_paused(store_of(ctx), name, False, create=False)
    print(f"resumed {name}")


@app.command()
def limit(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    max_running: str = typer.Argument(..., metavar="N|none", help="Jobs running at once, or none for no limit."),
) -> None:
    """At most N of a queue's jobs running at once, across every worker and host.

    Example: queuectl queue limit builds 2
    """
    from queuectl.core.errors import InvalidInput

    if max_running.lower() == "none":
        value = None
    else:
        try:
            value = int(max_running)
        except ValueError:
            raise InvalidInput(f"queue limit: expected a number of jobs or none, got {max_running!r}") from None
    service.set_limit(store_of(ctx), name, value)
    print(f"{name}: " + (f"at most {value} running at once" if value is not None else "no limit"))


@app.command()
def rate(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    per: str = typer.Argument(..., metavar="N/s|N/m|N/h|none", help="Claims started per window, or none."),
) -> None:
    """At most N of a queue's jobs started per second, minute or hour, across every worker and
    host (jobs held back stay pending and start when the window has room).

    Example: queuectl queue rate api 10/m
    """
    from queuectl.core.lifecycle.rates import format_rate

    value = service.set_rate(store_of(ctx), name, per)
    print(f"{name}: " + (f"at most {format_rate(*value)} started" if value else "no rate limit"))
