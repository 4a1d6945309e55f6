"""Runtime settings every worker shares, stored in the database: read, list, change."""

from __future__ import annotations

import functools

from queuectl.core.config import CONFIG_KEYS, RuntimeConfig, validate_config_value
from queuectl.core.errors import InvalidInput
from queuectl.store import Store


def config_values(store: Store) -> dict[str, str]:
    """Every key set in the database, as stored strings."""
    return {record["key"]: record["value"] for record in store.registry_list("config")}


def load_config(store: Store) -> RuntimeConfig:
    """The runtime keys as the database holds them, with defaults for the unset ones.

    Read from the database every time; parsing the same strings again is memoised (it was half
    of the cost of enqueueing one job over HTTP). RuntimeConfig is frozen, so sharing it is safe.
    """
    return _parsed(tuple(sorted(config_values(store).items())))


@functools.lru_cache(maxsize=16)
def _parsed(items: tuple[tuple[str, str], ...]) -> RuntimeConfig:
    return RuntimeConfig.from_strings(dict(items))


def set_config(store: Store, key: str, value: str) -> str:
    """Validate and store one key; returns the value as stored."""
    stored = validate_config_value(key, value, config_values(store))
    store.registry_put("config", key, {"value": stored})
    return stored


def config_items(store: Store) -> list[tuple[str, str, bool, str]]:
    """``(key, value, is_default, help)`` for every runtime key."""
    values = config_values(store)
    return [
        (key.name, values.get(key.name, key.default), key.name not in values, key.help) for key in CONFIG_KEYS.values()
    ]


def get_config(store: Store, key: str) -> str:
    """One key's value (its default when unset); InvalidInput for an unknown key."""
    for name, value, _, _ in config_items(store):
        if name == key:
            return value
    raise InvalidInput(f"unknown config key {key!r}; valid keys: {', '.join(CONFIG_KEYS)}")
