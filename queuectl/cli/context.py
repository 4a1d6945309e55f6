"""What every command shares: the resolved database URL and the store, opened on first use."""

from typing import Optional

import typer

from queuectl.core.config import default_db_url, resolve_db_url
from queuectl.store import Store, open_store

_OPENED: list[Store] = []  # closed by close_stores() on the way out


def close_stores() -> None:
    """Close every store a command opened. The console script exits without the interpreter's
    teardown, and only a closed connection lets SQLite checkpoint and remove its ``-wal`` file:
    left open, the log of a loop of commands (no worker running) grows without end."""
    while _OPENED:
        try:
            _OPENED.pop().close()
        except Exception:  # noqa: BLE001 - exiting anyway; the command's own result stands
            pass


class AppContext:
    """The database URL by precedence, and its store once a command needs it."""

    def __init__(self, db_option: Optional[str]) -> None:
        self.db_option = db_option
        self.db_url = resolve_db_url(db_option)
        self._store: Optional[Store] = None

    @property
    def store(self) -> Store:
        if self._store is None:
            # only the default data folder is created; any other path must lead to a folder
            self._store = open_store(self.db_url, create_folder=self.db_url == default_db_url())
            _OPENED.append(self._store)
        return self._store

    def close(self) -> None:
        """Close the store, if one was opened (before this process becomes another: worker start)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def command(self, *args: str) -> str:
        """A queuectl command line to show the user, with ``--db`` when the queue came from it
        (a password in the URL is not printed: the user has to put the URL back in)."""
        import shlex

        from queuectl.store import redact_url

        words = ["queuectl"]
        if self.db_option:
            safe = redact_url(self.db_option)
            words += ["--db", shlex.quote(safe) if safe == self.db_option else "URL"]
        return " ".join([*words, *args])


def store_of(ctx: typer.Context) -> Store:
    return ctx.find_root().obj.store


def context_of(ctx: typer.Context) -> AppContext:
    return ctx.find_root().obj
