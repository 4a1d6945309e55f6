"""What every command shares: the resolved database URL and the store, opened on first use."""

from typing import Optional

import typer

from queuectl.core.config import resolve_db_url
from queuectl.store import Store, open_store


class AppContext:
    def __init__(self, db_option: Optional[str]) -> None:
        self.db_url = resolve_db_url(db_option)
        self._store: Optional[Store] = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.db_url)
        return self._store


def store_of(ctx: typer.Context) -> Store:
    return ctx.find_root().obj.store


def context_of(ctx: typer.Context) -> AppContext:
    return ctx.find_root().obj
