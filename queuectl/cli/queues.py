"""Named queues: per-queue counts, pause, resume."""

import typer

from queuectl.cli.context import store_of
from queuectl.core.models import STATES
from queuectl.service import queues as service

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every queue with its job counts and whether it is paused.

    Example: queuectl queue list
    """
    rows = service.list_queues(store_of(ctx))
    from queuectl.cli.render import plain_table, print_json

    if as_json:
        print_json({row.name: {"paused": row.paused, **row.states} for row in rows})
        return
    plain_table(
        "queues",
        ("queue", "paused", *STATES),
        [(row.name, "yes" if row.paused else "no", *(str(row.states.get(s, 0)) for s in STATES)) for row in rows],
    )


@app.command()
def pause(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Stop new claims from a queue on every worker; running jobs finish.

    Example: queuectl queue pause builds
    """
    service.set_paused(store_of(ctx), name, True)
    print(f"paused {name}")


@app.command()
def resume(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Let workers claim from a paused queue again.

    Example: queuectl queue resume builds
    """
    service.set_paused(store_of(ctx), name, False)
    print(f"resumed {name}")
