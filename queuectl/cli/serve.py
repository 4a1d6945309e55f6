"""``queuectl serve`` (the HTTP API and web page) and ``queuectl token`` (the API's tokens).

The web stack (Starlette, uvicorn) is imported by ``serve`` only: every other command starts
without it.
"""

from typing import Optional

import typer

from queuectl.cli.context import context_of, store_of
from queuectl.cli.output import json_option, note, print_json
from queuectl.service import tokens as service

app = typer.Typer(no_args_is_help=True)


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; not loopback only once tokens exist."),
    port: int = typer.Option(8765, "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free one)."),
    max_lag: float = typer.Option(
        300.0, "--max-lag", min=0, help="Overloaded when the oldest due job waited longer (s)."
    ),
    max_depth: int = typer.Option(100_000, "--max-depth", min=0, help="Overloaded with more claimable jobs than this."),
    max_follows: int = typer.Option(
        64, "--max-follows", min=1, help="Live log streams (logs?follow=1) at once; more get a 503."
    ),
) -> None:
    """Serve the HTTP API and the web dashboard (every request but /healthz needs a token).

    Create a token first: queuectl token create --scope read,control --name me

    Example: queuectl serve --port 8765
    """
    from queuectl.core.config import default_db_url
    from queuectl.web.http import Settings
    from queuectl.web.server import run

    url = context_of(ctx).db_url
    store_of(ctx)  # a bad --db fails here, with the CLI's own message
    settings = Settings(
        url, max_lag=max_lag, max_depth=max_depth, max_follows=max_follows, create_folder=url == default_db_url()
    )
    run(settings, host, port)


@app.command("create")
def create(
    ctx: typer.Context,
    scope: str = typer.Option(..., "--scope", help="Comma-separated: read, control, enqueue (never implied)."),
    name: Optional[str] = typer.Option(None, "--name", help="A name to tell it by (default: its id)."),
    as_json: bool = json_option(),
) -> None:
    """Create an API token; it is printed once (the database keeps only its hash).

    Example: queuectl token create --scope read,control --name ci
    """
    record, secret = service.create_token(store_of(ctx), service.parse_scopes(scope), name)
    if as_json:
        print_json({**_shape(record), "token": secret})
        return
    print(secret)
    note(f"token {record.id} ({record.name}; scopes {','.join(record.scopes)}): shown this once, keep it safe")


@app.command("list")
def list_tokens(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """List API tokens: id, name, scopes, created (never the tokens themselves).

    Example: queuectl token list
    """
    records = service.list_tokens(store_of(ctx))
    if as_json:
        print_json([_shape(record) for record in records])
        return
    from queuectl.cli.output import Column, emit, pick_format

    rows = [[r.id, r.name, ",".join(r.scopes), _when(r.created_at)] for r in records]
    emit(pick_format(None, False), "tokens", [Column("id"), Column("name"), Column("scopes"), Column("created")], rows)


@app.command("revoke")
def revoke(ctx: typer.Context, which: str = typer.Argument(..., metavar="ID|NAME")) -> None:
    """Revoke a token by id or name: every serve refuses it from its next request.

    Example: queuectl token revoke ci
    """
    record = service.revoke_token(store_of(ctx), which)
    print(f"revoked {record.id} ({record.name})")


def _shape(record: service.Token) -> dict[str, object]:
    from queuectl.service.shapes import rfc3339

    return {**record.to_dict(), "created_at": rfc3339(record.created_at)}


def _when(epoch: float) -> str:
    from queuectl.service.shapes import rfc3339

    return rfc3339(epoch) or ""


def register(root: typer.Typer) -> None:
    root.command()(serve)
    root.add_typer(
        app,
        name="token",
        help="API tokens for queuectl serve: create, list, revoke.",
        epilog="Example: queuectl token create --scope read,control --name me",
    )
