"""The command line: parse, call one service function, render. Errors become one line + exit code."""

import sys
from typing import Optional

import typer

from ..errors import QueuectlError
from .context import AppContext

app = typer.Typer(
    name="queuectl",
    help="A background job queue for shell commands: SQLite by default, MongoDB to share.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _global(
    ctx: typer.Context,
    db: Optional[str] = typer.Option(
        None, "--db", metavar="URL",
        help="Database URL (sqlite:///path, mongodb://...). Default: $QUEUECTL_DB, .env, "
             "else a SQLite file in your data directory.",
    ),
) -> None:
    ctx.obj = AppContext(db)


def _register() -> None:
    from . import config_cmds, dlq, jobs, monitor, queues, workers, workflow_cmds

    jobs.register(app)
    workflow_cmds.register(app)
    monitor.register(app)
    app.add_typer(workers.app, name="worker", help="Start, stop and list worker processes.")
    app.add_typer(dlq.app, name="dlq", help="The dead letter queue: jobs out of retries.")
    app.add_typer(config_cmds.app, name="config", help="Runtime settings shared by all workers.")
    app.add_typer(queues.app, name="queue", help="Named queues: counts, pause and resume.")


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except QueuectlError as exc:
        print(f"queuectl: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
