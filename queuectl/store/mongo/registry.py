"""The MongoDB store's small collections: cron schedules, paused queues, runtime config, workers.

One generic record interface (put, list, compare-and-set, delete): a record is a document whose
``_id`` is its key. A mixin of :class:`~queuectl.store.mongo.store.MongoStore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from queuectl.core.errors import InvalidInput
from queuectl.core.models import Event
from queuectl.store.base import REGISTRY_KINDS
from queuectl.store.mongo.errors import translate_errors as _translate_errors

# fields a record gets when it is created without them (as the SQL tables' column defaults)
_DEFAULTS: dict[str, dict[str, Any]] = {
    "schedules": {"last_fire_at": None, "paused": False},
    "queues": {"paused": False, "max_running": None, "rate_count": None, "rate_window": None},
    "config": {},
    "workers": {"queues": "*", "concurrency": 1, "current_jobs": [], "stop_requested": False, "scale": ""},
    "batches": {"count": 0},
    "tokens": {},
}


class MongoRegistry:
    """Records in the small collections; needs ``_collections``."""

    _collections: dict[str, Any]

    if TYPE_CHECKING:  # provided by MongoLog

        def append_events(self, events: Sequence[Event]) -> None: ...

    def _collection(self, kind: str) -> Any:
        try:
            return self._collections[kind]
        except KeyError:
            raise InvalidInput(f"unknown registry kind {kind!r}") from None

    @staticmethod
    def _filter(key: str | None, expect: dict[str, Any] | None) -> dict[str, Any]:
        query: dict[str, Any] = {} if key is None else {"_id": key}
        for name, value in (expect or {}).items():
            query[name] = {"$in": list(value)} if isinstance(value, tuple) else value
        return query

    @_translate_errors
    def registry_put(
        self, kind: str, key: str, record: dict[str, Any], replace: bool = True, events: Sequence[Event] = ()
    ) -> bool:
        """As the contract says; ``events`` are logged right after the write (not in it: a
        worker dying in between loses its ``worker_started``, which its record shows anyway)."""
        collection = self._collection(kind)
        doc = {**_DEFAULTS[kind], **record}
        doc.pop(REGISTRY_KINDS[kind], None)
        if replace:
            collection.replace_one({"_id": key}, {"_id": key, **doc}, upsert=True)
            written = True
        else:
            written = collection.update_one({"_id": key}, {"$setOnInsert": doc}, upsert=True).upserted_id is not None
        if written and events:
            self.append_events(events)
        return written

    @_translate_errors
    def registry_list(self, kind: str, key: str | None = None) -> list[dict[str, Any]]:
        field = REGISTRY_KINDS[kind]
        docs = self._collection(kind).find(self._filter(key, None)).sort("_id", 1)
        return [{field: doc.pop("_id"), **doc} for doc in docs]

    @_translate_errors
    def registry_update(
        self,
        kind: str,
        changes: dict[str, Any],
        key: str | None = None,
        expect: dict[str, Any] | None = None,
        events: Sequence[Event] = (),
    ) -> int:
        collection = self._collection(kind)
        query = self._filter(key, expect)
        if key is not None:
            count = int(collection.update_one(query, {"$set": changes}).matched_count)
        else:
            count = int(collection.update_many(query, {"$set": changes}).matched_count)
        if count and events:
            self.append_events(events)
        return count

    @_translate_errors
    def registry_delete(self, kind: str, key: str, expect: dict[str, Any] | None = None) -> int:
        return int(self._collection(kind).delete_one(self._filter(key, expect)).deleted_count)
