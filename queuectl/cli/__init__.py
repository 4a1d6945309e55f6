"""The command line: parse, call one service function, render. Errors become one line + exit code."""

import sys
from typing import Optional

import typer

from queuectl.cli.context import AppContext
from queuectl.core.errors import EXIT_USAGE, QueuectlError
from queuectl.core.validation import is_utf8

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
        None,
        "--db",
        metavar="URL",
        help="Database URL (sqlite:///path, mongodb://...). Default: $QUEUECTL_DB, .env, "
        "else a SQLite file in your data directory.",
    ),
) -> None:
    ctx.obj = AppContext(db)


def _register() -> None:
    from queuectl.cli import config_cmds, dlq, handling_cmds, jobs, monitor, queues, workers, workflow_cmds

    jobs.register(app)
    handling_cmds.register(app)
    workflow_cmds.register(app)
    monitor.register(app)
    app.add_typer(workers.app, name="worker", help="Start, stop and list worker processes.")
    app.add_typer(dlq.app, name="dlq", help="The dead letter queue: jobs out of retries.")
    app.add_typer(config_cmds.app, name="config", help="Runtime settings shared by all workers.")
    app.add_typer(queues.app, name="queue", help="Named queues: counts, pause and resume.")


_register()


def main() -> None:
    """Run one command; errors become one line on stderr and their exit code (SystemExit)."""
    for position, argument in enumerate(sys.argv[1:], start=1):
        if not is_utf8(argument):  # bytes that are not UTF-8 arrive as lone surrogates
            print(f"queuectl: error: argument {position} is not valid UTF-8 text; pass it as UTF-8", file=sys.stderr)
            sys.exit(EXIT_USAGE)
    try:
        app()
    except QueuectlError as exc:
        print(f"queuectl: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def entry() -> None:
    """The console script: :func:`main`, then exit without the interpreter's teardown.

    Tearing down typer's and our modules costs ~10-20 ms that a command run from a script loop
    pays every time; everything worth keeping is flushed first.
    """
    import os

    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        code = code or 1
    os._exit(code)
