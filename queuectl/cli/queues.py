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
    """Every queue with its job counts and whether it is paused.

    Example: queuectl queue list
    """
    chosen = pick_format(fmt, as_json)
    rows = service.list_queues(store_of(ctx))
    if chosen == "json":
        from queuectl.service.shapes import queue_json

        print_json([queue_json(row.name, row.paused, row.states) for row in rows])
        return
    from queuectl.cli.output import Column, emit

    # on a narrow terminal the counts read least often are left out first; the name never is
    optional = {"cancelled": 1, "waiting": 2, "completed": 3, "dead": 4, "failed": 5}
    columns = [Column("queue"), Column("paused")]
    columns += [Column(state, justify="right", drop=optional.get(state, 0)) for state in STATES]
    emit(
        chosen,
        "queues",
        columns,
        [[row.name, "yes" if row.paused else "no", *(str(row.states.get(s, 0)) for s in STATES)] for row in rows],
    )


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
