"""The job record, its states and the small value types passed between worker, service and store."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from queuectl.core.defaults import DEFAULT_QUEUE

PENDING = "pending"
WAITING = "waiting"  # for its parent jobs (--after, --on-failure-of)
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"  # waiting for its retry at run_at
DEAD = "dead"  # the dead letter queue
CANCELLED = "cancelled"
HELD = "held"  # kept back by `queuectl hold`: visible, never claimed, until `queuectl release`
# a job of a bulk enqueue too big for one short transaction, written but not committed yet: no
# listing, count or claim sees it; it holds its id and unique key (see lifecycle.batches)
STAGED = "staged"

STATES = (PENDING, WAITING, HELD, PROCESSING, COMPLETED, FAILED, DEAD, CANCELLED)  # the states a user sees
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no i, l, o, u to misread
# a random byte's low 5 bits name its character (256 = 8 × 32: every character equally likely)
_BYTE_TO_ID = bytes(_ID_ALPHABET.encode()[byte % 32] for byte in range(256))


def new_job_id() -> str:
    """Ten base32 characters (50 random bits): short enough to type, unique at millions of jobs.

    ``os.urandom`` rather than ``secrets``: the latter pulls in OpenSSL (+6 MB per worker); one
    ``translate`` rather than ``base64`` (pure Python: a bulk enqueue of 1M lines spent 2 s there).
    """
    return os.urandom(10).translate(_BYTE_TO_ID).decode()


_BLOCK_PREFIX = 7  # random characters (35 bits) a block of bulk ids shares
_BLOCK_SIZE = 32**3  # ids per block: the last three characters count up


def bulk_job_ids() -> Iterator[str]:
    """Ids for one bulk enqueue: blocks of 32,768 that share a random seven-character prefix and
    count up in their last three characters, each block with a new prefix.

    Random ids land on a random page of the id index each: a bulk enqueue of 1M jobs rewrote
    nearly every page of it with every chunk (SQLite spent most of its time writing pages back).
    Counting up, a block grows the index at one place. Still as short, and as hard to collide:
    two enqueues meet only if they draw the same prefix (one in 34 billion per pair of blocks),
    and then the later is refused whole (duplicate id: nothing enqueued), never half-written.
    """
    alphabet = _ID_ALPHABET
    while True:
        prefix = os.urandom(_BLOCK_PREFIX).translate(_BYTE_TO_ID).decode()
        for n in range(_BLOCK_SIZE):
            yield prefix + alphabet[n >> 10] + alphabet[(n >> 5) & 31] + alphabet[n & 31]


@dataclass
class Job:
    """One queued shell command and everything known about its runs."""

    id: str
    command: str
    state: str = PENDING
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    attempts: int = 0
    max_retries: int = 3
    timeout: float | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    run_at: float = 0.0
    locked_by: str | None = None
    lease_expires_at: float | None = None
    exit_code: int | None = None
    last_error: str | None = None
    output: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    after: list[str] = field(default_factory=list)  # parents that must complete first
    on_failure_of: str | None = None  # compensation: runs only if this parent ends dead/cancelled
    unique_key: str | None = None
    on_finish: str | None = None  # hook command run after the final outcome
    hook_state: str | None = None
    hook_error: str | None = None
    schedule: str | None = None  # the cron schedule that enqueued it
    batch: str | None = None  # the bulk enqueue (enqueue --file) it came from
    labels: dict[str, str] = field(default_factory=dict)  # --label k=v: for filters, shown by show
    # the job's own retry policy, over the config: backoff_base, backoff_max, retry_on and
    # no_retry_on (exit codes); empty: the config's backoff, and every failure is retried
    retry: dict[str, Any] = field(default_factory=dict)
    # the latest progress the running job reported (through its progress channel), if any
    progress_done: float | None = None
    progress_total: float | None = None
    progress_message: str | None = None
    progress_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        if known.get("env") is None:
            known["env"] = {}
        if known.get("after") is None:
            known["after"] = []
        if known.get("labels") is None:
            known["labels"] = {}
        if known.get("retry") is None:
            known["retry"] = {}
        return cls(**known)


@dataclass(frozen=True)
class Lease:
    """Proof that a worker holds a job: the fencing token every later write must match."""

    job_id: str
    worker_id: str
    attempt: int


@dataclass(frozen=True)
class Outcome:
    """What to write when an attempt ends, at time ``at``.

    ``finished_at`` is set to ``at`` for a finished state; ``attempts`` is given only to undo the
    claim's count (a job handed back on shutdown did not fail).
    """

    state: str
    at: float
    run_at: float | None = None
    exit_code: int | None = None
    last_error: str | None = None
    output: str | None = None
    duration: float | None = None
    attempts: int | None = None
    # for the attempt's row in the job's history (see :class:`Attempt`)
    ended: str | None = None  # how it ended; None: from the state (completed, failed, dead)
    claimed_at: float | None = None
    started_at: float | None = None
    host: str | None = None
    pid: int | None = None
    signal: int | None = None
    max_rss_kb: int | None = None
    cpu_s: float | None = None
    keep_outputs: int = 10  # how many attempts of the job keep their output tail


# how an attempt ended (Attempt.ended)
ENDED_COMPLETED = "completed"
ENDED_FAILED = "failed"
ENDED_TIMEOUT = "timeout"
ENDED_LEASE_LOST = "lease lost"
ENDED_CANCELLED = "cancelled"
ENDED_SHUTDOWN = "shut down"
ENDED_NOT_STARTED = "not started"


@dataclass
class Attempt:
    """One run of a job, as its history keeps it: small, but for its own output tail, which
    only the latest ``attempt-outputs-kept`` attempts of a job keep.

    ``number`` counts the job's attempts from 1 in the order they ended; ``attempt`` is the
    lease token of that run (a run handed back on shutdown does not count, so two rows may
    share it).
    """

    number: int
    attempt: int
    worker: str | None
    ended: str
    ended_at: float
    claimed_at: float | None = None
    started_at: float | None = None
    host: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration: float | None = None
    error: str | None = None
    output: str | None = None
    max_rss_kb: int | None = None
    cpu_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Event:
    """One entry of the event log: ``seq`` orders them (assigned by the store on writing, 0
    before), ``kind`` says what happened (see :mod:`queuectl.core.lifecycle.events`)."""

    kind: str
    at: float
    job_id: str | None = None
    queue: str | None = None
    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "job_id": self.job_id,
            "queue": self.queue,
            "state": self.state,
            "data": self.data,  # always there: a stable shape for jq
        }


@dataclass
class Schedule:
    """A cron schedule: at each fire time it enqueues one job made from ``spec``."""

    name: str
    cron: str
    tz: str
    spec: dict[str, Any]  # the job fields: command, queue, priority, ...
    next_fire_at: float
    last_fire_at: float | None = None
    paused: bool = False
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_worker_nonce() -> str:
    """The random part of a worker id (12 hex digits): a supervisor draws it for each worker it
    spawns, so that it knows the worker's id before the worker has written a row."""
    return os.urandom(6).hex()


def worker_id_for(pid: int, nonce: str | None = None) -> str:
    """The registry id of the worker process ``pid``: the pid for people, and a random part
    (``nonce``, or a new one) that keeps ids apart across hosts and reused pids (pid 1 in every
    container)."""
    return f"w{pid}-{nonce or new_worker_nonce()}"


@dataclass
class WorkerInfo:
    """A worker process as the registry knows it."""

    id: str
    host: str
    pid: int
    state: str  # running | stopping | stopped | dead
    started_at: float
    last_heartbeat: float
    queues: str = "*"
    concurrency: int = 1
    current_jobs: list[str] = field(default_factory=list)
    stop_requested: bool = False
    scale: str = ""  # "min..max" when its supervisor autoscales ("": a fixed --count)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
