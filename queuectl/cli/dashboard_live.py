"""The live dashboard: refresh a snapshot on a timer, keep the last good one through a store
error, and redraw (:mod:`queuectl.cli.live` does the terminal). What is drawn is
:func:`queuectl.cli.dashboard_view.render`."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from rich.console import Console, Group, RenderableType
from rich.text import Text

from queuectl.cli.dashboard_view import render, status_view
from queuectl.cli.live import run_live, watch
from queuectl.core.errors import QueuectlError
from queuectl.service.dashboard import History, Snapshot, collect
from queuectl.store import Store


class DashboardState:
    """What the live view keeps between refreshes: the last good snapshot, the history, the error.

    :meth:`refresh` may run on another thread than :meth:`view`; a lock keeps them consistent.
    """

    def __init__(self, store: Store, source: str = "", clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.source = source
        self.clock = clock
        self.history = History()
        self.snapshot: Optional[Snapshot] = None
        self.error: Optional[str] = None
        self.reading_since: Optional[float] = None  # a refresh is under way since (monotonic)
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Read a new snapshot; on a store error keep the last one and remember the error."""
        self.reading_since = time.monotonic()
        try:
            snapshot = collect(self.store, self.clock())
        except QueuectlError as exc:
            with self._lock:
                self.error = str(exc)
            return False
        finally:
            self.reading_since = None
        with self._lock:
            self.snapshot, self.error = snapshot, None
            self.history.add(snapshot)
        return True

    def view(self, width: int, height: Optional[int], interval: Optional[float]) -> RenderableType:
        with self._lock:
            view = render(
                self.snapshot,
                self.history,
                width=width,
                height=height,
                error=self.error,
                source=self.source,
                interval=interval,
                now=self.clock(),
            )
        since = self.reading_since
        if interval is not None and since is not None and time.monotonic() - since > max(2.0, 2 * interval):
            stalled = Text(
                f" still reading the database ({time.monotonic() - since:.0f}s)… ", style="bold black on yellow"
            )
            view = Group(view, stalled)
        return view


def run_dashboard(store: Store, source: str, interval: float, once: bool, console: Optional[Console] = None) -> None:
    """``queuectl dashboard``: the live view on a terminal, else (or with ``once``) one snapshot."""
    console = console or Console(highlight=False)
    state = DashboardState(store, source)
    if once or not console.is_terminal:
        snapshot = collect(store)  # a store error ends the command with its exit code
        console.print(render(snapshot, None, width=console.width, source=source))
        return
    run_live(lambda width, height: state.view(width, height, interval), state.refresh, interval, console, screen=True)


def watch_status(store: Store, interval: float = 2.0) -> None:
    """``queuectl status --watch``."""
    watch(lambda: status_view(store), interval)
