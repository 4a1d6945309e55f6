"""Named queues: their counts, and pausing one for every worker on every host."""

from __future__ import annotations

from dataclasses import dataclass

from queuectl.core.errors import InvalidInput, NotFound
from queuectl.core.validation import check_queue_name
from queuectl.store import Store


def paused_queues(store: Store) -> set[str]:
    return {record["name"] for record in store.registry_list("queues") if record["paused"]}


def set_paused(store: Store, queue: str, paused: bool, create: bool = True) -> None:
    """Pause (no new claims from that queue, on any worker) or resume a queue.

    A queue that holds no job and was never paused is most likely a typo (``biulds``): NotFound,
    naming the known queues, when ``create`` is False (front ends pass the user's --create).
    """
    check_queue_name(queue)
    if not create:
        check_known(store, queue, "; --create pauses it before its first job" if paused else "")
    store.registry_put("queues", queue, {"paused": paused}, replace=False)  # created if new
    store.registry_update("queues", {"paused": paused}, key=queue)  # its limit stays
    if not paused:
        store.notify()


def check_known(store: Store, queue: str, hint: str = "") -> None:
    """NotFound, naming the known queues, for a queue that never held a job and has no settings:
    most likely a typo (``biulds``) that would otherwise pass in silence."""
    known = set(store.counts()) | {record["name"] for record in store.registry_list("queues")}
    if queue not in known:
        names = ", ".join(sorted(known)) or "none yet"
        raise NotFound(f"no queue named {queue!r} (known queues: {names}){hint}")


MAX_LIMIT = 100_000


def set_limit(store: Store, queue: str, max_running: int | None) -> None:
    """At most ``max_running`` jobs of ``queue`` processing at once, across every worker and
    host (None: no limit). SQL stores count and claim in one transaction under the queue's row
    lock; MongoDB takes a seat in the queue's document first (:mod:`queuectl.store.mongo.gates`)."""
    check_queue_name(queue)
    if max_running is not None and not 1 <= max_running <= MAX_LIMIT:
        raise InvalidInput(f"queue limit: expected 1 to {MAX_LIMIT:,} running jobs, or none")
    store.registry_put("queues", queue, {"max_running": max_running}, replace=False)
    store.registry_update("queues", {"max_running": max_running}, key=queue)
    store.notify()


def queue_limits(store: Store) -> dict[str, int]:
    return {r["name"]: int(r["max_running"]) for r in store.registry_list("queues") if r.get("max_running")}


def set_rate(store: Store, queue: str, text: str) -> tuple[int, float] | None:
    """At most N claims of ``queue`` started per second, minute or hour (``"10/m"``; ``"none"``
    lifts it), across every worker and host; returns the rate as (count, window seconds). The
    claim applies it atomically (:mod:`queuectl.core.lifecycle.rates`)."""
    from queuectl.core.lifecycle.rates import parse_rate

    check_queue_name(queue)
    rate = parse_rate(text)
    changes = {"rate_count": rate[0] if rate else None, "rate_window": rate[1] if rate else None}
    store.registry_put("queues", queue, changes, replace=False)
    store.registry_update("queues", changes, key=queue)
    store.notify()
    return rate


@dataclass
class QueueRow:
    name: str
    paused: bool
    states: dict[str, int]  # the states it has jobs in
    limit: int | None = None  # at most this many running at once (queue limit)
    rate: str | None = None  # at most this many claims per window (queue rate), as "10/m"


def list_queues(store: Store) -> list[QueueRow]:
    """Every queue that holds a job, is paused or has a limit or rate, by name."""
    from queuectl.core.lifecycle.rates import format_rate

    counts, records = store.counts(), {r["name"]: r for r in store.registry_list("queues")}
    rows = []
    for name in sorted(set(counts) | set(records)):
        record = records.get(name, {})
        limit, count = record.get("max_running"), record.get("rate_count")
        if name not in counts and not (record.get("paused") or limit or count):
            continue
        rate = format_rate(int(count), float(record["rate_window"])) if count else None
        rows.append(
            QueueRow(name, bool(record.get("paused")), dict(counts.get(name, {})), int(limit) if limit else None, rate)
        )
    return rows


def get_queue(store: Store, name: str) -> QueueRow:
    """One queue as :func:`list_queues` shows it; NotFound if it is no queue."""
    check_queue_name(name)
    for row in list_queues(store):
        if row.name == name:
            return row
    raise NotFound(f"no queue named {name!r}")
