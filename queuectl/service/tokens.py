"""API tokens of ``queuectl serve``: create, list, revoke, and check one a request presents.

A token is ``qct_<id>_<secret>``. The store keeps only its SHA-256 (a secret of 256 random bits
needs no slow hash: nothing can be guessed from it) in the ``tokens`` registry, so every
``serve`` on every host sharing the database accepts the same tokens, and a revoked token stops
working everywhere at its next request. Scopes are explicit: ``enqueue`` (running arbitrary
shell commands over HTTP) is never implied by another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from queuectl.core.errors import InvalidInput, NotFound
from queuectl.store import Store

READ, CONTROL, ENQUEUE = "read", "control", "enqueue"
SCOPES = (READ, CONTROL, ENQUEUE)
PREFIX = "qct_"
_TOKEN = re.compile(r"qct_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


@dataclass(frozen=True)
class Token:
    """A token's record (never its secret)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes), "created_at": self.created_at}


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"read,control"`` -> ``("read", "control")``; unknown or no scopes are refused."""
    scopes = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(f"unknown scope {unknown[0]!r}" if unknown else "give at least one scope")
    return scopes


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, scopes: tuple[str, ...], name: str | None = None) -> tuple[Token, str]:
    """A new token with these scopes; returns its record and the token itself (shown once)."""
    for scope in scopes:
        if scope not in SCOPES:
            raise InvalidInput(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")
    token_id = secrets.token_hex(6)
    name = name or token_id
    if not _NAME.fullmatch(name):
        raise InvalidInput("a token name is 1-64 letters, digits or _.@- (starting with a letter or digit)")
    secret = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    record = Token(token_id, name, tuple(scopes), time.time())
    store.registry_put(
        "tokens",
        token_id,
        {"name": name, "scopes": ",".join(scopes), "hash": _digest(secret), "created_at": record.created_at},
        replace=False,
    )
    return record, secret


def _record(row: dict[str, object]) -> Token:
    return Token(str(row["id"]), str(row["name"]), tuple(str(row["scopes"]).split(",")), float(row["created_at"]))  # type: ignore[arg-type]


def list_tokens(store: Store) -> list[Token]:
    return [_record(row) for row in store.registry_list("tokens")]


def has_tokens(store: Store) -> bool:
    return bool(store.registry_list("tokens"))


def revoke_token(store: Store, which: str) -> Token:
    """Delete the token with this id or name (a name shared by several tokens is refused)."""
    matches = [token for token in list_tokens(store) if which in (token.id, token.name)]
    if not matches:
        raise NotFound(f"no token with id or name {which!r}; see queuectl token list")
    if len(matches) > 1:
        raise InvalidInput(f"{len(matches)} tokens are named {which!r}: revoke one by its id")
    store.registry_delete("tokens", matches[0].id)
    return matches[0]


def authenticate(store: Store, presented: str) -> Token | None:
    """The token's record if ``presented`` is a live token, else None (compared in constant time)."""
    match = _TOKEN.fullmatch(presented)
    if match is None:
        return None
    rows = store.registry_list("tokens", key=match.group(1))
    if not rows or not hmac.compare_digest(str(rows[0]["hash"]), _digest(presented)):
        return None
    return _record(rows[0])
