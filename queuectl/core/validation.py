"""What a valid job is: a spec from the command line, a JSON line or the HTTP API, checked and
made into a :class:`~queuectl.core.models.Job`. Pure: no store, no clock of its own."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from queuectl.core.config import RuntimeConfig
from queuectl.core.defaults import MAX_COMMAND_BYTES, MAX_ENV_BYTES, MAX_RUN_AT
from queuectl.core.durations import parse_duration, parse_instant
from queuectl.core.errors import InvalidInput
from queuectl.core.models import DEFAULT_QUEUE, STATES, Job, new_job_id

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JOB_FIELDS = (
    "id",
    "command",
    "max_retries",
    "priority",
    "queue",
    "delay",
    "run_at",
    "timeout",
    "cwd",
    "env",
    "after",
    "on_failure_of",
    "unique_key",
    "on_finish",
    "labels",
    "backoff_base",
    "backoff_max",
    "retry_on",
    "no_retry_on",
    "snooze_code",
    "snooze_delay",
)


def parse_spec(text: str) -> dict[str, Any]:
    """A job spec from the command line or one line of a file: a JSON object, or a plain command."""
    stripped = text.strip().lstrip("\ufeff")  # a UTF-8 byte order mark is not part of the job
    if stripped[:1] == "{" and stripped[1:2].isspace() and stripped[1:].lstrip()[:1] not in ('"', "}", ""):
        return {"command": text}  # a shell brace group ({ a; b; } > f): JSON has a name or } next
    if stripped.startswith(("{", "[")):
        try:
            spec = json.loads(stripped)
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                return {"command": text}  # a shell command such as [ -f x ] && ...
            # some messages end in "at" already ("Unterminated string starting at"): no "at at"
            where = f"column {exc.colno}" if exc.msg.endswith(" at") else f"at column {exc.colno}"
            raise InvalidInput(f"malformed JSON job: {exc.msg} {where}") from None
        except RecursionError:
            raise InvalidInput("a JSON job nested too deeply; a job is a flat object of fields") from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise InvalidInput(f"malformed JSON job: {str(exc).splitlines()[0]}") from None
        if not isinstance(spec, dict):
            raise InvalidInput('a JSON job must be an object like {"command": "echo hi"}')
        unknown = sorted(set(spec) - set(JOB_FIELDS))
        if unknown:
            raise InvalidInput(f"unknown job field(s) {', '.join(unknown)}; valid fields: {', '.join(JOB_FIELDS)}")
        return spec
    return {"command": text}


def _check_utf8(spec: dict[str, Any]) -> None:
    """Arguments with bytes that are not UTF-8 arrive as lone surrogates; no database stores them."""
    for name, value in spec.items():
        texts = value if isinstance(value, list) else list(value.items()) if isinstance(value, dict) else [value]
        for text in texts:
            for part in text if isinstance(text, tuple) else (text,):
                if isinstance(part, str) and not is_utf8(part):
                    raise InvalidInput(f"{name}: not valid UTF-8 text; pass it as UTF-8")


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def build_job(spec: dict[str, Any], config: RuntimeConfig, now: float, new_id: Callable[[], str] = new_job_id) -> Job:
    """Validate a spec (JSON fields or CLI options) and make the Job to insert; ``new_id`` makes
    its id when the spec gives none (a bulk enqueue passes :func:`~queuectl.core.models.bulk_job_ids`)."""
    _check_utf8(spec)
    command = spec.get("command")
    if command is not None and not isinstance(command, str):
        raise InvalidInput(f"command: expected a string (the shell command), got {command!r}")
    if not isinstance(command, str) or not command.strip():
        raise InvalidInput('empty command: give the shell command to run, e.g. queuectl enqueue "echo hi"')
    if "\x00" in command:
        raise InvalidInput("the command contains a NUL byte, which no shell can run")
    if len(command.encode()) > MAX_COMMAND_BYTES:
        raise InvalidInput(f"the command is over {MAX_COMMAND_BYTES // 1024} KiB; put it in a script and enqueue that")
    job_id = spec.get("id")
    if job_id is None:
        job_id = new_id()
    elif not isinstance(job_id, str) or not _ID_RE.fullmatch(job_id):
        raise InvalidInput(f"invalid job id {job_id!r}: use 1-64 letters, digits, '.', '_', ':' or '-'")
    queue = spec.get("queue")
    queue = DEFAULT_QUEUE if queue is None else queue
    check_queue_name(queue)
    run_at = now
    if spec.get("delay") is not None and spec.get("run_at") is not None:
        raise InvalidInput("give either delay or run_at, not both")
    if spec.get("delay") is not None:
        run_at = now + parse_duration(spec["delay"], "delay")
    elif spec.get("run_at") is not None:
        if not isinstance(spec["run_at"], str):
            raise InvalidInput("run_at: expected an ISO-8601 time such as 2026-12-01T09:00:00Z")
        run_at = parse_instant(spec["run_at"])
        if run_at >= MAX_RUN_AT:
            raise InvalidInput(f"run_at: {spec['run_at']!r} is out of range (before the year 3000)")
    timeout = spec.get("timeout")
    if timeout is not None:
        timeout = parse_duration(timeout, "timeout")
        if timeout == 0:
            raise InvalidInput("timeout: must be more than 0 (leave it out for no timeout)")
    elif config.job_timeout > 0:
        timeout = config.job_timeout
    return Job(
        id=job_id,
        command=command,
        queue=queue,
        priority=_int_field(spec, "priority", 0, -1_000_000, 1_000_000),
        max_retries=_int_field(spec, "max_retries", config.max_retries, 0, 1000),
        timeout=timeout,
        cwd=_cwd_field(spec.get("cwd")),
        env=_env_field(spec.get("env")),
        labels=labels_field(spec.get("labels")),
        retry=retry_policy(spec),
        after=_parents_field(spec.get("after")),
        on_failure_of=_parent_id(spec.get("on_failure_of"), "on_failure_of"),
        unique_key=_short_text(spec.get("unique_key"), "unique_key", 200),
        on_finish=_short_text(spec.get("on_finish"), "on_finish", MAX_COMMAND_BYTES),
        run_at=run_at,
        created_at=now,
        updated_at=now,
    )


def check_queue_name(queue: Any) -> str:
    if not isinstance(queue, str) or not _QUEUE_RE.fullmatch(queue):
        raise InvalidInput(f"invalid queue name {queue!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return queue


def _int_field(spec: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = spec.get(name)
    if value is None:
        return default
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    return value


def _parent_id(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidInput(f"{name}: {value!r} is not a job id")
    return value


def _parents_field(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise InvalidInput("after: expected a job id or a list of job ids")
    parents = [_parent_id(item, "after") for item in items]
    return list(dict.fromkeys(p for p in parents if p))  # without repeats, in order


def _short_text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value or len(value.encode()) > limit:
        raise InvalidInput(f"{name}: expected a non-empty string of at most {limit} bytes")
    return value


def _cwd_field(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidInput(f"cwd: expected a directory path, got {value!r}")
    return value


def _env_field(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):  # ["KEY=VALUE", ...] as the CLI collects them
        pairs = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep:
                raise InvalidInput(f"env: expected KEY=VALUE, got {item!r}")
            pairs[key] = val
        value = pairs
    if not isinstance(value, dict):
        raise InvalidInput("env: expected an object of names to strings, or KEY=VALUE pairs")
    size = 0
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.fullmatch(key):
            raise InvalidInput(f"env: invalid variable name {key!r}")
        if key.startswith("QUEUECTL_"):
            raise InvalidInput(f"env: {key} is reserved for queuectl itself")
        if not isinstance(val, str) or "\x00" in val:
            raise InvalidInput(f"env: the value of {key} must be a string without NUL bytes")
        size += len(key) + len(val.encode())
    if size > MAX_ENV_BYTES:
        raise InvalidInput(f"env: over {MAX_ENV_BYTES // 1024} KiB in all; pass large data in a file")
    return dict(value)


def _exit_codes(value: Any, what: str) -> list[int]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    codes = []
    for item in items:
        try:
            code = int(str(item).strip())
        except ValueError:
            raise InvalidInput(f"{what}: expected exit codes such as 75,111, got {value!r}") from None
        if not 1 <= code <= 255:
            raise InvalidInput(f"{what}: exit codes are 1 to 255, got {code}")
        codes.append(code)
    return sorted(set(codes))


def retry_policy(spec: dict[str, Any]) -> dict[str, Any]:
    """A job's own retry policy from its spec: ``backoff_base`` (1-100), ``backoff_max``
    (a duration), ``retry_on`` / ``no_retry_on`` (exit codes, "75,111" or a list; not both),
    ``snooze_code`` (1-255, over the config's snooze-exit-code) and ``snooze_delay`` (a duration)."""
    policy: dict[str, Any] = {}
    if spec.get("backoff_base") is not None:
        try:
            base = float(spec["backoff_base"])
        except (TypeError, ValueError):
            raise InvalidInput(f"backoff_base: expected a number from 1 to 100, got {spec['backoff_base']!r}") from None
        if not 1 <= base <= 100:
            raise InvalidInput(f"backoff_base: expected a number from 1 to 100, got {spec['backoff_base']!r}")
        policy["backoff_base"] = base
    if spec.get("backoff_max") is not None:
        policy["backoff_max"] = parse_duration(spec["backoff_max"], "backoff_max")
    if spec.get("retry_on") is not None and spec.get("no_retry_on") is not None:
        raise InvalidInput("give either retry_on or no_retry_on, not both")
    for name in ("retry_on", "no_retry_on"):
        if spec.get(name) is not None:
            policy[name] = _exit_codes(spec[name], name)
    if spec.get("snooze_code") is not None:
        policy["snooze_code"] = _int_field(spec, "snooze_code", 0, 1, 255)
    if spec.get("snooze_delay") is not None:
        policy["snooze_delay"] = parse_duration(spec["snooze_delay"], "snooze_delay")
    return policy


_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
MAX_LABELS = 20


def labels_field(value: Any) -> dict[str, str]:
    """Labels from ``["k=v", ...]`` (the CLI's --label) or ``{"k": "v"}`` (JSON): at most 20,
    keys of letters, digits, ``.``, ``_``, ``/``, ``-`` and values of printable text up to 200."""
    if value is None:
        return {}
    if isinstance(value, list):
        pairs: dict[str, str] = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep:
                raise InvalidInput(f"label: expected KEY=VALUE, got {item!r}")
            if pairs.get(key, val) != val:
                raise InvalidInput(
                    f"label {key} given twice ({key}={pairs[key]}, {key}={val}): a job has one value of each"
                )
            pairs[key] = val
        value = pairs
    if not isinstance(value, dict):
        raise InvalidInput("labels: expected an object of names to strings, or KEY=VALUE pairs")
    if len(value) > MAX_LABELS:
        raise InvalidInput(f"labels: at most {MAX_LABELS} per job")
    for key, val in value.items():
        if not isinstance(key, str) or not _LABEL_KEY_RE.fullmatch(key):
            raise InvalidInput(f"label: invalid name {key!r}: use letters, digits, '.', '_', '/' or '-'")
        if not isinstance(val, str) or len(val) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in val):
            raise InvalidInput(f"label: the value of {key} must be printable text of at most 200 characters")
    return dict(sorted(value.items()))


def label_filters(value: list[str] | None) -> list[str]:
    """``--label k=v`` filters as the stores match them: ``"k=v"`` strings, each checked."""
    return [f"{key}={val}" for key, val in labels_field(value).items()] if value else []


def check_state(state: str | None) -> str | None:
    if state is not None and state not in STATES:
        raise InvalidInput(f"unknown state {state!r}; valid states: {', '.join(STATES)}")
    return state
