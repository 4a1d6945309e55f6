"""Settings: where the queue lives (URL precedence) and the runtime keys every worker shares.

Precedence for the database URL: ``--db`` > ``QUEUECTL_DB`` in the environment > ``.env`` in the
working directory (only a file of our own that others cannot write) > a SQLite file in the
user's data directory. Runtime keys live in the database itself so that every worker, on every
host, reads the same values.
"""

from __future__ import annotations

import math
import os
import stat
import sys
from dataclasses import dataclass, fields
from typing import Callable

from queuectl.core.defaults import MAX_OUTPUT_LIMIT, OUTPUT_LIMIT
from queuectl.core.durations import parse_duration
from queuectl.core.errors import InvalidInput

ENV_DB = "QUEUECTL_DB"


def default_data_dir() -> str:
    """``$XDG_DATA_HOME/queuectl``, else ``~/.local/share/queuectl``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "queuectl")


def default_db_url() -> str:
    """The queue a user gets with no configuration at all: a private SQLite file."""
    return f"sqlite:///{os.path.join(default_data_dir(), 'queue.db')}"


def _dotenv_value(key: str) -> str | None:
    """Read one key from ``./.env`` without touching ``os.environ`` (python-dotenv, imported lazily).

    ``.env`` picks the queue whose jobs we run, so a file another user owns or can write (in a
    shared folder, say) is ignored with a warning; and root is told which file chose its queue.
    The file is checked through the descriptor it is read from: no swap in between.
    """
    if not os.path.isfile(".env"):
        return None
    path = os.path.abspath(".env")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block us
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as stream:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        from dotenv import dotenv_values

        value = dotenv_values(stream=stream).get(key) or None
    if value is None:
        return None
    if info.st_uid != os.geteuid():
        _warn(f"ignoring {key} in {path}: the file belongs to another user (uid {info.st_uid})")
        return None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        _warn(f"ignoring {key} in {path}: other users can write to it (fix it with: chmod go-w {path})")
        return None
    if os.geteuid() == 0:
        _warn(f"{key} comes from {path}; running as root, so the jobs of that queue run as root")
    return value


def _warn(message: str) -> None:
    print(f"queuectl: warning: {message}", file=sys.stderr, flush=True)


def resolve_db_url(option: str | None = None) -> str:
    """The database URL by precedence: option, environment, ``.env``, default."""
    return option or os.environ.get(ENV_DB) or _dotenv_value(ENV_DB) or default_db_url()


# --- runtime keys shared through the database -------------------------------------------------


def _int_between(low: int, high: int) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise InvalidInput(f"expected a whole number from {low} to {high}, got {text!r}") from None
        if not low <= value <= high:
            raise InvalidInput(f"{value} is out of range: use a whole number from {low} to {high}")
        return value

    return parse


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise InvalidInput(f"expected a number from {low:g} to {high:g}, got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidInput(f"{text} is out of range: use a number from {low:g} to {high:g}")
        return value

    return parse


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


def _bytes_between(low: int, high: int) -> Callable[[str], float]:
    """A size in bytes: ``65536``, ``64KiB``, ``4MiB`` (K and M are binary here: KiB and MiB)."""

    def parse(text: str) -> float:
        raw = str(text).strip()
        number = raw.rstrip("bBkKmMiI ")
        unit = raw[len(number) :].strip().lower()
        try:
            value = float(number) * _SIZE_UNITS[unit]
        except (ValueError, KeyError):
            raise InvalidInput(f"expected a size such as 65536, 64KiB or 4MiB, got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise InvalidInput(f"{text} is out of range: use {low // 1024}KiB to {high >> 20}MiB")
        return int(value)

    return parse


def _seconds_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = parse_duration(text, "value")
        if not low <= value <= high:
            raise InvalidInput(f"{text} is out of range: use {low:g}s to {high:g}s")
        return value

    return parse


@dataclass(frozen=True)
class ConfigKey:
    """One runtime setting: its name on the command line, default, parser and meaning."""

    name: str
    default: str
    parse: Callable[[str], float]
    help: str


CONFIG_KEYS: dict[str, ConfigKey] = {
    key.name: key
    for key in (
        ConfigKey(
            "max-retries", "3", _int_between(0, 1000), "retries after the first attempt before a job goes to the DLQ"
        ),
        ConfigKey("backoff-base", "2", _float_between(1, 100), "retry delay is backoff-base ** attempts seconds"),
        ConfigKey("backoff-max", "3600", _seconds_between(0, 30 * 86400), "upper bound of one retry delay, in seconds"),
        ConfigKey(
            "backoff-jitter",
            "0.2",
            _float_between(0, 1),
            "each retry delay is spread at random by up to this fraction either way (0: exact)",
        ),
        ConfigKey(
            "snooze-exit-code",
            "0",
            _int_between(0, 255),
            "a job exiting with this code is re-queued after snooze-delay without counting an attempt; 0: none",
        ),
        ConfigKey("snooze-delay", "60", _seconds_between(0, 30 * 86400), "how long a snoozed job waits, in seconds"),
        ConfigKey(
            "lease",
            "30",
            _seconds_between(1, 86400),
            "how long a claim holds without a heartbeat before the job is recovered",
        ),
        ConfigKey(
            "heartbeat",
            "5",
            _seconds_between(0.1, 3600),
            "how often a worker renews its leases and saves output; at most lease/2",
        ),
        ConfigKey(
            "job-timeout", "0", _seconds_between(0, 30 * 86400), "default per-job timeout in seconds; 0 means none"
        ),
        ConfigKey(
            "shutdown-grace",
            "30",
            _seconds_between(0, 86400),
            "on graceful stop, how long running jobs may finish before they are killed",
        ),
        ConfigKey("kill-grace", "5", _seconds_between(0, 3600), "between SIGTERM and SIGKILL when a job is stopped"),
        ConfigKey(
            "poll-interval",
            "1",
            _seconds_between(0.01, 60),
            "how often an idle worker looks for due jobs when nothing woke it",
        ),
        ConfigKey(
            "retain-completed",
            "604800",
            _seconds_between(0, 10 * 365 * 86400),
            "workers delete completed jobs finished longer ago than this (seconds); 0 keeps them",
        ),
        ConfigKey(
            "retain-dead",
            "0",
            _seconds_between(0, 10 * 365 * 86400),
            "workers delete dead and cancelled jobs finished longer ago than this; 0 keeps them",
        ),
        ConfigKey(
            "hook-timeout", "60", _seconds_between(1, 86400), "an on-finish hook is killed after this many seconds"
        ),
        ConfigKey(
            "retain-events",
            "604800",
            _seconds_between(0, 10 * 365 * 86400),
            "workers delete events older than this from the event log (seconds); 0 keeps them",
        ),
        ConfigKey(
            "attempt-outputs-kept",
            "10",
            _int_between(0, 1000),
            "how many of a job's latest attempts keep their output tail in its history",
        ),
        ConfigKey(
            "output-limit",
            str(OUTPUT_LIMIT),
            _bytes_between(1024, MAX_OUTPUT_LIMIT),
            "bytes of output kept per attempt (its tail): 1KiB to 16MiB, e.g. 4MiB",
        ),
    )
}


@dataclass(frozen=True)
class RuntimeConfig:
    """The parsed runtime keys, as a worker or a service function uses them."""

    max_retries: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 3600.0
    backoff_jitter: float = 0.2
    snooze_exit_code: int = 0
    snooze_delay: float = 60.0
    lease: float = 30.0
    heartbeat: float = 5.0
    job_timeout: float = 0.0
    shutdown_grace: float = 30.0
    kill_grace: float = 5.0
    poll_interval: float = 1.0
    retain_completed: float = 604800.0
    retain_dead: float = 0.0
    hook_timeout: float = 60.0
    retain_events: float = 604800.0
    attempt_outputs_kept: int = 10
    output_limit: int = OUTPUT_LIMIT

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> RuntimeConfig:
        """Build from the raw strings stored in the database; unknown keys are ignored."""
        parsed: dict[str, float] = {}
        for field in fields(cls):
            key = CONFIG_KEYS[field.name.replace("_", "-")]
            raw = values.get(key.name, key.default)
            try:
                parsed[field.name] = key.parse(raw)
            except InvalidInput:  # a value written by hand into the database: fall back safely
                parsed[field.name] = key.parse(key.default)
        return cls(**parsed)  # type: ignore[arg-type]


def validate_config_value(key: str, raw: str, current: dict[str, str]) -> str:
    """Check one ``config set``; returns the normalised string to store or raises InvalidInput."""
    if key not in CONFIG_KEYS:
        raise InvalidInput(f"unknown config key {key!r}; valid keys: {', '.join(CONFIG_KEYS)}")
    try:
        value = CONFIG_KEYS[key].parse(raw)
    except InvalidInput as exc:
        raise InvalidInput(f"config {key}: {exc}") from None
    merged = RuntimeConfig.from_strings({**current, key: str(value)})
    if merged.heartbeat * 2 > merged.lease:
        raise InvalidInput(
            f"config {key}: heartbeat ({merged.heartbeat:g}s) must be at most half the lease "
            f"({merged.lease:g}s), or live workers would look dead"
        )
    return format_number(value)


def format_number(value: float) -> str:
    """A number as ``config set`` accepts it back: ``1209600``, ``0.2`` (never ``1.2e+06``)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def output_limit_for(config: RuntimeConfig, document_budget: int | None) -> int:
    """The bytes of output a worker keeps of one attempt: ``output-limit``, and on a store whose
    job record has a size budget (a MongoDB document holds the job's output and each kept
    attempt's), that budget shared by the ``attempt-outputs-kept + 1`` outputs it holds."""
    if document_budget is None:
        return config.output_limit
    return max(1024, min(config.output_limit, document_budget // (config.attempt_outputs_kept + 1)))
