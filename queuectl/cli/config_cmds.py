"""Runtime settings stored in the database: get, set, list."""

from typing import Optional

import typer

from queuectl.cli.context import context_of, store_of
from queuectl.cli.output import format_option, json_option, pick_format, print_json
from queuectl.service import config as service

app = typer.Typer(no_args_is_help=True)


@app.command()
def get(ctx: typer.Context, key: str = typer.Argument(...)) -> None:
    """Print one setting.

    Example: queuectl config get max-retries
    """
    print(service.get_config(store_of(ctx), key))


@app.command("set")
def set_(ctx: typer.Context, key: str = typer.Argument(...), value: str = typer.Argument(...)) -> None:
    """Change one setting for every worker (they pick it up at their next heartbeat).

    Example: queuectl config set max-retries 5
    """
    stored = service.set_config(store_of(ctx), key, value)
    print(f"{key} = {stored}")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = json_option(), fmt: Optional[str] = format_option()) -> None:
    """Every setting with its value and meaning.

    Example: queuectl config list
    """
    from queuectl.cli.render import plain_table
    from queuectl.store import redact_url

    chosen = pick_format(fmt, as_json)
    items = service.config_items(store_of(ctx))
    database = redact_url(context_of(ctx).db_url)
    if chosen == "json":
        from queuectl.service.shapes import config_json

        print_json(config_json(database, items))
        return
    plain_table(
        chosen,
        f"config (database: {database})",
        ("key", "value", "default", "meaning"),
        [(name, value, "yes" if default else "no", meaning) for name, value, default, meaning in items],
        shrink=("meaning",),
    )
