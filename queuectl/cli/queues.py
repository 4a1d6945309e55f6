"""Named queues: per-queue counts, pause, resume."""

import typer

from queuectl.cli.context import store_of
from queuectl.core.models import STATES
from queuectl.service import jobs as service

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Every queue with its job counts and whether it is paused.

    Example: queuectl queue list
    """
    store = store_of(ctx)
    counts, paused = store.counts(), store.paused_queues()
    names = sorted(set(counts) | paused)
    from queuectl.cli.render import plain_table, print_json

    if as_json:
        print_json({name: {"paused": name in paused, **counts.get(name, {})} for name in names})
        return
    plain_table(
        "queues", ("queue", "paused", *STATES),
        [(name, "yes" if name in paused else "no", *(str(counts.get(name, {}).get(s, 0)) for s in STATES))
         for name in names],
    )


@app.command()
def pause(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Stop new claims from a queue on every worker; running jobs finish.

    Example: queuectl queue pause builds
    """
    store_of(ctx).set_paused(service.check_queue_name(name), True)
    print(f"paused {name}")


@app.command()
def resume(ctx: typer.Context, name: str = typer.Argument(...)) -> None:
    """Let workers claim from a paused queue again.

    Example: queuectl queue resume builds
    """
    store_of(ctx).set_paused(service.check_queue_name(name), False)
    print(f"resumed {name}")
