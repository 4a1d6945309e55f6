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
    add_completion=False,  # `queuectl completion SHELL` instead, loaded only when completing
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog='Example: queuectl enqueue "echo hi" && queuectl worker start --burst && queuectl list',
)
COMPLETE_VAR = "_QUEUECTL_COMPLETE"


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"queuectl {version('queuectl')}")
        raise typer.Exit(0)


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
    _version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = AppContext(db)


def completion(shell: str = typer.Argument(..., metavar="bash|zsh|fish")) -> None:
    """Print the shell completion script; source it from your shell's startup file.

    Example: queuectl completion bash >> ~/.bashrc
    """
    from typer._completion_shared import get_completion_script

    from queuectl.core.errors import InvalidInput

    if shell not in ("bash", "zsh", "fish"):
        raise InvalidInput(f"completion: unknown shell {shell!r}; one of bash, zsh, fish")
    print(get_completion_script(prog_name="queuectl", complete_var=COMPLETE_VAR, shell=shell))


def _register() -> None:
    from queuectl.cli import (
        config_cmds,
        deps_cmds,
        dlq,
        events_cmds,
        handling_cmds,
        jobs,
        monitor,
        queues,
        serve,
        workers,
        workflow_cmds,
    )

    jobs.register(app)
    handling_cmds.register(app)
    app.command()(completion)
    workflow_cmds.register(app)
    deps_cmds.register(app)
    monitor.register(app)
    events_cmds.register(app)
    groups = (
        (workers.app, "worker", "Start, stop and list worker processes.", "queuectl worker start --count 3 --detach"),
        (dlq.app, "dlq", "The dead letter queue: jobs out of retries.", "queuectl dlq list; queuectl dlq retry --all"),
        (config_cmds.app, "config", "Runtime settings shared by all workers.", "queuectl config set max-retries 5"),
        (queues.app, "queue", "Named queues: counts, pause and resume.", "queuectl queue pause builds"),
    )
    for group, name, text, example in groups:
        app.add_typer(group, name=name, help=text, epilog=f"Example: {example}")
    serve.register(app)


_register()


def _show_usage_error(error: typer.BadParameter, file: object = None) -> None:
    """Click's usage error as every other error: one ``queuectl: error:`` line on stderr (not
    its usage line, hint and message), naming the command's help. Set as ``UsageError.show``;
    the no-arguments help (a subclass with its own ``show``) is unchanged."""
    import re

    message = error.format_message().rstrip(".")
    option = getattr(error, "option_name", None)
    if isinstance(option, str) and re.fullmatch(r"-\d+(\.\d*)?", option):  # "-1" reads as an option
        message = f"invalid value {option}: a negative number is not allowed here"
    command = error.ctx.command_path if error.ctx is not None else "queuectl"
    print(f"queuectl: error: {message}; see {command} --help", file=sys.stderr)


def main() -> None:
    """Run one command; errors become one line on stderr and their exit code (SystemExit)."""
    for position, argument in enumerate(sys.argv[1:], start=1):
        if not is_utf8(argument):  # bytes that are not UTF-8 arrive as lone surrogates
            print(f"queuectl: error: argument {position} is not valid UTF-8 text; pass it as UTF-8", file=sys.stderr)
            sys.exit(EXIT_USAGE)
    import os

    if COMPLETE_VAR in os.environ:  # a shell asking for completions: typer's classes, only now
        from typer._completion_classes import completion_init

        completion_init()
    # Typer's own copy of Click raises these; its public BadParameter is one (a UsageError)
    usage_error = next(kind for kind in typer.BadParameter.__mro__ if kind.__name__ == "UsageError")
    usage_error.show = _show_usage_error  # type: ignore[attr-defined]
    try:
        app(prog_name="queuectl", complete_var=COMPLETE_VAR)
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
    from queuectl.cli.context import close_stores

    close_stores()  # lets SQLite remove its -wal file: see close_stores
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        code = code or 1
    os._exit(code)
