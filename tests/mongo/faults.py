"""A fault-injecting wrapper around mongomock: the failures a replica set has and mongomock never.

Every call on a wrapped collection is numbered (one count across all collections). A
:class:`Faults` plan names call numbers to fail, each either *before* the call (raised, nothing
applied: a lost request) or *after* it (applied, then raised: a lost reply). The error is
``AutoReconnect``, what pymongo raises when an election or a dropped connection cuts a call.
Index management and change streams pass through uncounted (they run before a plan is armed).

Calls are serialised by one lock, so threads can share a mongomock client (which is not
thread-safe on its own).
"""

from __future__ import annotations

import threading
from typing import Any

from pymongo.errors import AutoReconnect

COUNTED = {
    "insert_one",
    "insert_many",
    "update_one",
    "update_many",
    "replace_one",
    "find_one_and_update",
    "delete_one",
    "delete_many",
    "find",
    "find_one",
    "count_documents",
    "aggregate",
    "distinct",
}


class Faults:
    """The call counter and the plan: ``{call number: "before" | "after"}``."""

    def __init__(self) -> None:
        self.calls = 0
        self.plan: dict[int, str] = {}
        self.fired: list[tuple[int, str, str]] = []  # (call number, when, "collection.method")
        self.log: list[str] = []
        self.lock = threading.RLock()

    def arm(self, call: int, when: str) -> None:
        """Fail the ``call``-th call from now (1 = the next one), ``when`` = before | after."""
        assert when in ("before", "after")
        self.plan[self.calls + call] = when

    def disarm(self) -> None:
        self.plan.clear()

    def run(self, where: str, method: Any, args: Any, kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            number = self.calls
            self.log.append(where)
            when = self.plan.pop(number, None)
            if when == "before":
                self.fired.append((number, when, where))
                raise AutoReconnect(f"injected: call {number} ({where}) never reached the server")
            result = method(*args, **kwargs)
            if where.endswith((".find", ".aggregate")):
                result = _Materialised(list(result)) if where.endswith(".aggregate") else result
            if when == "after":
                self.fired.append((number, when, where))
                raise AutoReconnect(f"injected: call {number} ({where}) was applied, its reply lost")
            return result


class _Materialised(list):  # type: ignore[type-arg]
    """An aggregate's result read inside the lock."""


class FaultyCollection:
    def __init__(self, collection: Any, faults: Faults) -> None:
        self._collection = collection
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._collection, name)
        if name not in COUNTED:
            return target
        where = f"{self._collection.name}.{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._faults.run(where, target, args, kwargs)

        return call

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"FaultyCollection({self._collection.name})"


class FaultyDatabase:
    def __init__(self, database: Any, faults: Faults) -> None:
        self._database = database
        self._faults = faults

    def __getitem__(self, name: str) -> FaultyCollection:
        return FaultyCollection(self._database[name], self._faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)


class FaultyClient:
    """A mongomock client whose collections fail on plan."""

    def __init__(self, client: Any, faults: Faults) -> None:
        self._client = client
        self.faults = faults

    def __getitem__(self, name: str) -> FaultyDatabase:
        return FaultyDatabase(self._client[name], self.faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
