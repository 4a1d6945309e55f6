"""Single-document writes whose lost reply is resolved by reading, not by guessing.

A write to a replica set can fail in two ways that look the same to the client: before it was
applied (nothing happened) or after (it happened, the reply was lost: an election, a dropped
connection, a write-concern timeout). pymongo retries a write once, within its server selection
timeout, but an election can take longer. Every write here stamps the document with a token of
its own (``_w``); when the reply is lost, reading the document back for that token says which
of the two happened. Not applied: the write is sent once more (its guards decide again, so this
never applies it twice). Still unknown after that: the error goes up, and the caller's own retry
meets the guards.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

T = TypeVar("T")

TOKEN = "_w"  # the field that carries the token of a document's latest write


def new_token() -> str:
    return os.urandom(8).hex()


def is_uncertain(exc: BaseException) -> bool:
    """An error after which the write may or may not have been applied."""
    import pymongo.errors as perr

    if isinstance(exc, (perr.ConnectionFailure, perr.WTimeoutError)):
        return True
    if isinstance(exc, perr.WriteConcernError):
        return True
    if isinstance(exc, perr.BulkWriteError):
        return not exc.details.get("writeErrors") and bool(exc.details.get("writeConcernErrors"))
    return bool(getattr(exc, "timeout", False)) and isinstance(exc, perr.PyMongoError)


def resolved(write: Callable[[], T], applied: Callable[[], T | None]) -> T:
    """Run ``write``; if its reply is lost, ``applied()`` says what it did (None: not applied,
    then the write is sent once more). Errors of the lookup or the second try go up."""
    try:
        return write()
    except Exception as exc:
        if not is_uncertain(exc):
            raise
        first = exc
    try:
        found = applied()
    except Exception as exc:
        if is_uncertain(exc):
            raise first from None
        raise
    if found is not None:
        return found
    return write()


def stamp(update: dict[str, Any], token: str) -> dict[str, Any]:
    """``update`` that also records ``token`` as the document's latest write."""
    stamped = {name: dict(value) if isinstance(value, dict) else value for name, value in update.items()}
    stamped.setdefault("$set", {})[TOKEN] = token
    return stamped


def update_one(collection: Any, query: dict[str, Any], update: dict[str, Any]) -> bool:
    """``update_one`` on the document ``query["_id"]`` names; True if it matched (and was written)."""
    token = new_token()
    stamped = stamp(update, token)

    def write() -> bool:
        return bool(collection.update_one(query, stamped).matched_count == 1)

    def applied() -> bool | None:
        return True if collection.find_one({"_id": query["_id"], TOKEN: token}, {"_id": 1}) else None

    return resolved(write, applied)


def insert_one(collection: Any, doc: dict[str, Any]) -> None:
    """``insert_one``; a lost reply of an insert that happened is success, not a duplicate."""
    token = new_token()
    stamped = {**doc, TOKEN: token}

    def write() -> bool:
        collection.insert_one(dict(stamped))
        return True

    def applied() -> bool | None:
        return True if collection.find_one({"_id": doc["_id"], TOKEN: token}, {"_id": 1}) else None

    resolved(write, applied)
