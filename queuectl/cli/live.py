"""Redraw a view in place until q or Ctrl-C: the loop behind ``dashboard`` and ``status --watch``.

The database is read on a background thread, so a slow or unreachable one never makes the view or
its keys unresponsive; keys are read in cbreak mode and the terminal is given back as it was.
Without a terminal, ``watch`` prints one refresh after the other instead (like ``vmstat 1``).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

from rich.console import Console, Group, RenderableType
from rich.text import Text

from queuectl.cli.render import printable
from queuectl.core.errors import QueuectlError

QUIT_KEYS = (b"q", b"Q", b"\x04", b"\x1b")  # q, Ctrl-D, Esc


class _Stop(Exception):
    """SIGTERM or SIGHUP: leave the view like on q."""


def run_live(
    produce: Callable[[int, int], RenderableType],
    refresh: Callable[[], Any],
    interval: float,
    console: Console,
    screen: bool = True,
) -> None:
    """Refresh every ``interval`` seconds and redraw until q, Ctrl-C, SIGTERM or SIGHUP.

    The reads run on a background thread, so that a slow or unreachable database never makes
    the view (or q) unresponsive. Keys are read in cbreak mode (no echo, no Enter needed) when
    stdin is a terminal; the terminal settings are restored however the loop ends.
    """
    from rich.live import Live

    fd: Optional[int] = None
    saved: Any = None
    if sys.stdin is not None and sys.stdin.isatty():
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    stop, kick = threading.Event(), threading.Event()
    crashed: list[BaseException] = []

    def refresher() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                refresh()
            except BaseException as exc:  # a bug: shown by the main thread, not lost here
                crashed.append(exc)
            try:
                os.write(wake_write, b"!")
            except OSError:
                pass
            if crashed:
                return
            # a slow read (a huge queue) stretches the pause: the database is busy with us a third
            # of the time at most
            elapsed = time.monotonic() - started
            kick.wait(max(interval - elapsed, 2 * elapsed))
            kick.clear()

    def on_signal(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    thread = threading.Thread(target=refresher, name="queuectl-refresh", daemon=True)
    try:
        if fd is not None:
            tty.setcbreak(fd)
        with Live(
            console=console,
            screen=screen,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            thread.start()
            size, drawn_at, fresh = None, 0.0, False
            while True:
                if crashed:
                    raise crashed[0]
                if fresh or console.size != size or time.monotonic() - drawn_at >= 1.0:
                    size, drawn_at = console.size, time.monotonic()
                    live.update(produce(size.width, size.height), refresh=True)
                watched = [wake_read] + ([fd] if fd is not None else [])
                ready, _, _ = select.select(watched, [], [], 0.25)
                fresh = wake_read in ready
                if fresh:
                    os.read(wake_read, 4096)
                if fd is not None and fd in ready:
                    keys = os.read(fd, 64)
                    if not keys:
                        fd = None  # stdin closed: only Ctrl-C or a signal can stop us now
                    elif any(key in keys for key in QUIT_KEYS):
                        return
                    elif b"r" in keys:
                        kick.set()
    except (KeyboardInterrupt, _Stop):
        return
    finally:
        stop.set()
        kick.set()
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if thread.is_alive():
            thread.join(0.5)  # a read stuck on the database does not hold us up longer
        if not thread.is_alive():  # else the process exit closes them: the thread may still write
            os.close(wake_read)
            os.close(wake_write)


def watch(
    produce: Callable[[], RenderableType],
    interval: float = 2.0,
    console: Optional[Console] = None,
    iterations: Optional[int] = None,
) -> None:
    """Redraw ``produce()`` in place every ``interval`` seconds until q or Ctrl-C.

    A store error shows as a red line above the last good view; the next good read clears it.
    Without a terminal each refresh is printed below the previous one (like ``vmstat 1``);
    ``iterations`` bounds that (for tests).
    """
    console = console or Console(highlight=False)
    last: list[Optional[RenderableType]] = [None]
    error: list[Optional[str]] = [None]

    def refresh() -> None:
        try:
            last[0], error[0] = produce(), None
        except QueuectlError as exc:
            error[0] = str(exc)

    def view(width: int = 0, height: int = 0) -> RenderableType:
        hint = " · q quits" if console.is_terminal else ""
        header = Text(f"every {interval:g}s · {time.strftime('%H:%M:%S')}{hint}", style="dim")
        parts: list[RenderableType] = [header]
        if error[0] is not None:
            parts.append(Text(f" database unavailable: {printable(error[0])} ", style="bold white on red"))
        if last[0] is not None:
            parts.append(last[0])
        return Group(*parts)

    if not console.is_terminal:
        count = 0
        try:
            while iterations is None or count < iterations:
                if count:
                    time.sleep(interval)
                    console.print()
                refresh()
                console.print(view())
                count += 1
        except KeyboardInterrupt:
            pass
        return
    run_live(view, refresh, interval, console, screen=False)
