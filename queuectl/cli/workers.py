"""Worker commands: start (foreground or --detach), stop (through the database), list."""

import os
import sys
from typing import Optional

import typer

from queuectl.cli.context import context_of, store_of
from queuectl.cli.output import format_option, json_option, pick_format, print_json
from queuectl.core.config import ENV_DB, default_data_dir
from queuectl.core.errors import InvalidInput
from queuectl.core.validation import check_queue_name
from queuectl.service import workers as service

app = typer.Typer(no_args_is_help=True)


def _parse_queues(text: Optional[str]) -> Optional[list[str]]:
    """``--queue``: None (every queue) when not given or ``*``/``all``. An empty list is refused:
    ``--queue "$Q"`` with Q unset must not serve every queue."""
    if text is None or text.strip() in ("*", "all"):
        return None
    names = [check_queue_name(name.strip()) for name in text.split(",") if name.strip()]
    if not names:
        raise InvalidInput(f"--queue {text!r} names no queue: give them (builds,default), or '*' for every queue")
    return names


@app.command()
def start(
    ctx: typer.Context,
    count: str = typer.Option(
        "1",
        "--count",
        "-c",
        help="Worker processes: N, or MIN..MAX to grow with the queue's lag and shrink when idle (1..8).",
    ),
    queue: Optional[str] = typer.Option(
        None, "--queue", "-q", help="Queues to serve, in priority order: builds,default (default: all)."
    ),
    concurrency: int = typer.Option(1, "--concurrency", "-k", min=1, max=1024, help="Jobs per worker at once."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background and return."),
    log_file: Optional[str] = typer.Option(None, "--log", help="With --detach: log file."),
    burst: bool = typer.Option(False, "--burst", help="Exit once the queue has no eligible job left."),
    log_format: str = typer.Option(
        "text", "--log-format", help="Log lines as text, or json: one object a line (time, worker, job, event)."
    ),
    scale_lag: float = typer.Option(
        5.0, "--scale-lag", min=0, help="With MIN..MAX: add a worker once the oldest due job waited this many seconds."
    ),
    scale_idle: float = typer.Option(
        60.0, "--scale-idle", min=0, help="With MIN..MAX: retire a worker idle this many seconds (its jobs finish)."
    ),
    scale_cooldown: float = typer.Option(
        10.0, "--scale-cooldown", min=0, help="With MIN..MAX: seconds between two changes of the worker count."
    ),
) -> None:
    """Run workers under a supervisor; Ctrl-C or SIGTERM stops them gracefully.

    Example: queuectl worker start --count 3      (or --count 1..4: autoscaling)
    """
    from queuectl.runtime.autoscale import ScalePolicy, parse_count

    try:
        low, high = parse_count(count)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if log_format not in ("text", "json"):
        raise InvalidInput(f"--log-format {log_format!r}: use text or json")
    scale = ScalePolicy(low, high, scale_lag, scale_idle, scale_cooldown) if high > low else None
    queues = _parse_queues(queue)
    log_path = _log_path(log_file) if detach else None  # a bad --log: refused before anything starts
    app_ctx = context_of(ctx)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        _warn(log_format, "workers run as root, so every job runs as root; prefer an unprivileged user")
    stale = service.retire_stale_workers(store_of(ctx))  # also: can the queue be opened?
    if stale:
        _warn(
            log_format,
            f"{len(stale)} worker(s) of an earlier run on this host died without stopping "
            f"(pids {', '.join(str(w.pid) for w in stale)}); marked stopped, their jobs come back when their "
            "leases expire",
        )
    flags = ["--log-format", log_format]
    if scale is not None:
        flags += ["--max-count", str(high), "--scale-lag", str(scale_lag), "--scale-idle", str(scale_idle)]
        flags += ["--scale-cooldown", str(scale_cooldown)]
    if log_path is not None:  # --detach
        _detach(app_ctx.db_url, low, queues, concurrency, log_path, burst, app_ctx.command("worker", "stop"), flags)
        return
    app_ctx.close()
    _become_supervisor(app_ctx.db_url, _supervisor_args(low, queues, concurrency, burst) + flags)


def _supervisor_args(count: int, queues: Optional[list[str]], concurrency: int, burst: bool) -> list[str]:
    """The command line of the lean supervisor process (``python -m queuectl.runtime.supervisor``)."""
    cmd = [sys.executable, "-m", "queuectl.runtime.supervisor", "--count", str(count)]
    cmd += ["--concurrency", str(concurrency)]
    if queues:
        cmd += ["--queue", ",".join(queues)]
    if burst:
        cmd.append("--burst")
    return cmd


def _supervisor_env(url_fd: int) -> dict[str, str]:
    # the URL (it may hold a password) goes over a pipe, not into an environment any job could
    # read from /proc
    from queuectl.runtime.supervisor import ENV_DB_FD

    env = {key: value for key, value in os.environ.items() if key not in (ENV_DB, ENV_DB_FD)}
    env[ENV_DB_FD] = str(url_fd)
    return env


def _become_supervisor(db_url: str, cmd: list[str]) -> None:
    """Replace this process by the supervisor: with Typer, Rich and this command's store loaded
    it stayed ~10 MB bigger for as long as the workers ran. exec keeps the pid, the terminal,
    the signals a shell sends and the exit code, so to the caller nothing else changes."""
    from queuectl.runtime.supervisor import url_pipe

    url_fd = url_pipe(db_url)
    os.set_inheritable(url_fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(cmd[0], cmd, _supervisor_env(url_fd))
    except OSError as exc:  # reached only if the exec failed
        os.close(url_fd)
        raise InvalidInput(f"cannot start the supervisor ({cmd[0]}): {exc.strerror}") from None


def _warn(log_format: str, message: str) -> None:
    """A warning before the workers start: a ``queuectl: warning:`` line, or with ``--log-format
    json`` a record like every later line (a log shipper parses them all)."""
    if log_format == "json":
        from queuectl.runtime import loglines

        loglines.set_format("json")
        loglines.emit("queuectl", "warning", message)
    else:
        print(f"queuectl: warning: {message}", file=sys.stderr)


def _log_path(log_file: Optional[str]) -> str:
    """Where a detached supervisor logs: ``--log``, whose folder must exist (a mistyped one is
    refused, not made, as ``--db``'s is), else workers.log in the data folder (made if need be)."""
    if log_file is None:
        path = os.path.join(default_data_dir(), "workers.log")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return path
    folder = os.path.dirname(os.path.abspath(log_file))
    if not os.path.isdir(folder):
        raise InvalidInput(f"cannot open log file {log_file}: no folder {folder}; create it first")
    return log_file


def _detach(
    db_url: str,
    count: int,
    queues: Optional[list[str]],
    concurrency: int,
    log_path: str,
    burst: bool,
    stop_hint: str,
    flags: list[str],
) -> None:
    import subprocess

    from queuectl.runtime.supervisor import url_pipe

    # the supervisor itself, checked options and all
    cmd = _supervisor_args(count, queues, concurrency, burst) + flags
    try:
        # private: the log names jobs and errors; never through a symlink someone planted
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o600)  # an older log created 0644 is tightened too
        log = os.fdopen(fd, "ab")
    except OSError as exc:
        raise InvalidInput(f"cannot open log file {log_path}: {exc.strerror}") from None
    url_fd = url_pipe(db_url)
    env = _supervisor_env(url_fd)
    with log:
        try:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                pass_fds=(url_fd,),
            )
        finally:
            os.close(url_fd)
    print(
        f"started {count} worker(s) in the background (supervisor pid {proc.pid}); "
        f"log: {log_path}; stop with: {stop_hint}"
    )


@app.command()
def stop(
    ctx: typer.Context,
    wait: bool = typer.Option(False, "--wait", help="Wait until they have stopped."),
    timeout: float = typer.Option(120.0, "--timeout", min=0, help="With --wait: give up after this many seconds."),
) -> None:
    """Ask every worker of this queue, on every host, to stop gracefully.

    Example: queuectl worker stop --wait
    """
    asked, stopped = service.stop_workers(store_of(ctx), wait, timeout)
    print(f"asked {asked} worker(s) to stop; running jobs finish first")
    if not wait or not asked:
        return
    if not stopped:
        raise InvalidInput(f"workers still running after {timeout:g}s")
    print("all workers stopped")


@app.command("list")
def list_(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", "-a", help="Include stopped workers."),
    as_json: bool = json_option(),
    fmt: Optional[str] = format_option(),
) -> None:
    """Workers with host, pid, state, current jobs and last heartbeat.

    Example: queuectl worker list
    """
    import time

    chosen = pick_format(fmt, as_json)
    workers, config = service.worker_list(store_of(ctx), show_all)
    now = time.time()
    if chosen == "json":
        from queuectl.service.shapes import worker_json

        print_json([worker_json(w, config, now) for w in workers])
    else:
        from queuectl.cli.render import workers_table

        workers_table(workers, config, chosen, now)
