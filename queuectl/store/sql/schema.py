"""The SQLite schema, its migrations, and the mapping between a Job and a row of ``jobs``."""

from __future__ import annotations

import json
import operator
import sqlite3
from typing import Any

from queuectl.core.lifecycle import CLAIMABLE, HOOK_DUE, KEY_HOLDING, is_due_at
from queuectl.core.models import DEAD, FAILED, PROCESSING, Job
from queuectl.store.sql.counters import SQLITE_COUNTERS, recount

SCHEMA_VERSION = 10  # 7: staged bulk enqueues, API tokens, progress, history, events; 8: labels, retry policy;
# 9: counters per (queue, state), kept by triggers, a queue's rate limit, workers.scale (autoscaling);
# 10: fewer indexes for a state change to move (RETIRED_INDEXES)


def sql_list(values: tuple[str, ...]) -> str:
    """``('a', 'b')``: a list of state names spelled out in SQL, as partial indexes need them
    (the planner uses a partial index only for a query whose WHERE spells the same condition)."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


CLAIMABLE_SQL = f"state IN {sql_list(CLAIMABLE)}"
# OR-connected, not IN: SQLite uses a partial index for a query on one of the states only so
FAILURES_SQL = f"(state = '{FAILED}' OR state = '{DEAD}')"
# indexes of earlier schemas that a state change had to move for every job (schema 10 replaced them)
RETIRED_INDEXES = ("jobs_finished", "jobs_updated")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL,
    timeout REAL,
    cwd TEXT,
    env TEXT,
    run_at REAL NOT NULL,
    locked_by TEXT,
    lease_expires_at REAL,
    exit_code INTEGER,
    last_error TEXT,
    output TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    duration REAL,
    after_ids TEXT,
    on_failure_of TEXT,
    unique_key TEXT,
    on_finish TEXT,
    hook_state TEXT,
    hook_error TEXT,
    schedule TEXT,
    batch TEXT,  -- the bulk enqueue that staged it (see lifecycle.batches)
    labels TEXT,  -- a JSON object, each pair also a "k=v" row of the label table (for filters)
    retry_policy TEXT,  -- JSON: the job's own backoff and exit-code policy
    ready INTEGER NOT NULL DEFAULT 0,  -- 1 once run_at has passed: only these are in the claim indexes
    progress_done REAL,
    progress_total REAL,
    progress_message TEXT,
    progress_at REAL
);
-- claim order (one queue, any queue): partial indexes of the due jobs only, so neither finished
-- jobs nor jobs waiting for a future run_at (delays, retries) slow a claim down
CREATE INDEX IF NOT EXISTS jobs_ready_queue ON jobs(queue, priority DESC, created_at)
    WHERE {CLAIMABLE_SQL} AND ready = 1;
CREATE INDEX IF NOT EXISTS jobs_ready_any ON jobs(priority DESC, created_at)
    WHERE {CLAIMABLE_SQL} AND ready = 1;
-- the not-yet-due jobs, by time: each claim first promotes the ones whose time has come
CREATE INDEX IF NOT EXISTS jobs_not_due ON jobs(run_at) WHERE {CLAIMABLE_SQL} AND ready = 0;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(run_at) WHERE {CLAIMABLE_SQL};
CREATE INDEX IF NOT EXISTS jobs_due_queue ON jobs(queue, run_at) WHERE {CLAIMABLE_SQL};
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_expires_at) WHERE state = '{PROCESSING}';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queue, created_at);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(queue, created_at);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs(state, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
-- every index below a state change must move costs the busy path a page (a claim and an outcome
-- touch ~15): these two hold only the jobs their readers ask for (throughput, purge --older-than,
-- the dashboard's failures), so a claim touches neither and a pending job is in neither
CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs(state, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_failures ON jobs(state, updated_at) WHERE {FAILURES_SQL};
-- a unique key is taken only while its job is active: finished jobs leave the index
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique_active ON jobs(unique_key)
    WHERE unique_key IS NOT NULL AND state IN {sql_list(KEY_HOLDING)};
-- the jobs of a bulk enqueue (enqueue --file), by batch and state: staging, publishing and
-- sweeping a batch walk only its jobs in the state they change
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs(batch, state) WHERE batch IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_hook_due ON jobs(updated_at) WHERE hook_state = '{HOOK_DUE}';
CREATE TABLE IF NOT EXISTS job_deps (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    kind TEXT NOT NULL,  -- after | on_failure
    PRIMARY KEY (child, parent, kind)
);
CREATE INDEX IF NOT EXISTS job_deps_parent ON job_deps(parent);
-- a job's labels as "k=v" rows: list/cancel/rm --label k=v find their jobs by this key
CREATE TABLE IF NOT EXISTS job_labels (
    label TEXT NOT NULL,
    job TEXT NOT NULL,
    PRIMARY KEY (label, job)
);
CREATE INDEX IF NOT EXISTS job_labels_job ON job_labels(job);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    tz TEXT NOT NULL,
    spec TEXT NOT NULL,
    next_fire_at REAL NOT NULL,
    last_fire_at REAL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,  -- staging | committed: the commit point of a bulk enqueue
    created_at REAL NOT NULL,
    touched_at REAL NOT NULL,  -- the stager's last chunk: a batch untouched for long is abandoned
    count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- max_running: at most this many of the queue's jobs processing at once (NULL: no limit);
-- rate_count claims started per rate_window seconds (NULL: no rate), rate_log the recent claim times
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    max_running INTEGER,
    rate_count INTEGER,
    rate_window REAL,
    rate_log TEXT
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    queues TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    current_jobs TEXT NOT NULL DEFAULT '[]',
    stop_requested INTEGER NOT NULL DEFAULT 0,
    scale TEXT NOT NULL DEFAULT ''  -- schema 9: "min..max" of an autoscaling supervisor
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,  -- comma-separated: read, control, enqueue
    hash TEXT NOT NULL,  -- sha256 of the whole token (the token itself is never stored)
    created_at REAL NOT NULL
);
"""

# job field -> column, in table order; list-valued fields are stored as JSON text
FIELD_COLUMNS = {
    "id": "id",
    "command": "command",
    "state": "state",
    "queue": "queue",
    "priority": "priority",
    "attempts": "attempts",
    "max_retries": "max_retries",
    "timeout": "timeout",
    "cwd": "cwd",
    "env": "env",
    "run_at": "run_at",
    "locked_by": "locked_by",
    "lease_expires_at": "lease_expires_at",
    "exit_code": "exit_code",
    "last_error": "last_error",
    "output": "output",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
    "duration": "duration",
    "after": "after_ids",
    "on_failure_of": "on_failure_of",
    "unique_key": "unique_key",
    "on_finish": "on_finish",
    "hook_state": "hook_state",
    "hook_error": "hook_error",
    "schedule": "schedule",
    "batch": "batch",
    "progress_done": "progress_done",
    "progress_total": "progress_total",
    "progress_message": "progress_message",
    "progress_at": "progress_at",
    "labels": "labels",
    "retry": "retry_policy",
}
JSON_FIELDS = ("env", "after", "labels", "retry")
JOB_COLUMNS = ", ".join(FIELD_COLUMNS.values())
ADDED_COLUMNS = (
    "after_ids",
    "on_failure_of",
    "unique_key",
    "on_finish",
    "hook_state",
    "hook_error",
    "schedule",
    "batch",
    "labels",
    "retry_policy",
)  # schema 3 (batch: 7, labels and retry_policy: 8): added to older files by _migrate
PROGRESS_COLUMNS = {
    "progress_done": "REAL",
    "progress_total": "REAL",
    "progress_message": "TEXT",
    "progress_at": "REAL",
}  # schema 7


def log_schema(seq_column: str, clustered: str = "") -> str:
    """The history and event tables, in the dialect's spelling: ``seq_column`` is an ever-growing
    key (SQLite: the rowid, with the newest row always kept; PostgreSQL: an identity column);
    ``clustered`` stores attempts in their key's order (SQLite: WITHOUT
    ROWID, one b-tree per row written instead of two; PostgreSQL: nothing)."""
    return f"""
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,  -- 1, 2, ... in the order the job's attempts ended
    attempt INTEGER NOT NULL,  -- the lease token of the run
    worker TEXT,
    host TEXT,
    pid INTEGER,
    claimed_at REAL,
    started_at REAL,
    ended_at REAL NOT NULL,
    ended TEXT NOT NULL,  -- completed | failed | timeout | lease lost | shut down | not started
    exit_code INTEGER,
    signal INTEGER,
    duration REAL,
    error TEXT,
    output TEXT,  -- only the job's latest attempt-outputs-kept attempts keep it
    max_rss_kb INTEGER,
    cpu_s REAL,
    PRIMARY KEY (job_id, n)
) {clustered};
CREATE TABLE IF NOT EXISTS events (
    {seq_column},
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT,
    queue TEXT,
    state TEXT,
    data TEXT
);
-- one index besides seq: every index is written by every event, on the busy path. A queue's
-- events are read by seq and filtered, a time is found by bisecting seq (events are logged in
-- time order, near enough), and retention deletes from the oldest seq.
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq) WHERE job_id IS NOT NULL;
"""


# the rowid: a new row takes max + 1, so numbers never go back as long as the newest row is never
# deleted (retention keeps it: see SqlLog.purge_events). AUTOINCREMENT would cost a write of
# sqlite_sequence per event, on the busy path.
SQLITE_SEQ = "seq INTEGER PRIMARY KEY"
SQLITE_CLUSTERED = "WITHOUT ROWID"


RATE_COLUMNS = {"rate_count": "INTEGER", "rate_window": "REAL", "rate_log": "TEXT"}


def needs_migration(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a file of any earlier version up to date (inside the caller's write transaction)."""
    existing = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if existing and version < 8:  # schema 7: a staged job holds its unique key too; 8: a held one
        conn.execute("DROP INDEX IF EXISTS jobs_unique_active")
    for column in ADDED_COLUMNS if existing else ():
        if column not in existing:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
    queue_columns = {row[1] for row in conn.execute("PRAGMA table_info(queues)")}
    if queue_columns and "max_running" not in queue_columns:  # schema 8: a queue's concurrency limit
        conn.execute("ALTER TABLE queues ADD COLUMN max_running INTEGER")
    for column, kind in RATE_COLUMNS.items() if queue_columns else ():
        if column not in queue_columns:  # schema 9: a queue's rate limit
            conn.execute(f"ALTER TABLE queues ADD COLUMN {column} {kind}")
    worker_columns = {row[1] for row in conn.execute("PRAGMA table_info(workers)")}
    if worker_columns and "scale" not in worker_columns:  # schema 9: an autoscaling supervisor's range
        conn.execute("ALTER TABLE workers ADD COLUMN scale TEXT NOT NULL DEFAULT ''")
    if existing and "ready" not in existing:  # schema 6: every waiting job starts not-ready; claims promote
        conn.execute("ALTER TABLE jobs ADD COLUMN ready INTEGER NOT NULL DEFAULT 0")
        conn.execute("DROP INDEX IF EXISTS jobs_ready_queue")
        conn.execute("DROP INDEX IF EXISTS jobs_ready_any")
    for column, kind in PROGRESS_COLUMNS.items() if existing else ():
        if column not in existing:  # schema 7: progress reported by running jobs
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
    for index in RETIRED_INDEXES if version < 10 else ():  # schema 10
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    for statement in (SCHEMA + log_schema(SQLITE_SEQ, SQLITE_CLUSTERED)).split(";"):
        if statement.strip():
            conn.execute(statement)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'job_counts'").fetchone():
        for statement in (*SQLITE_COUNTERS, *recount("job_counts")):  # schema 9: counted once, then kept
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


_FIELDS_OF = operator.attrgetter(*FIELD_COLUMNS)  # one C call reads every field, in column order
_JSON_POSITIONS = [list(FIELD_COLUMNS).index(name) for name in JSON_FIELDS]


INSERT_SQL = f"INSERT INTO jobs ({JOB_COLUMNS}, ready) VALUES ({', '.join('?' * (len(FIELD_COLUMNS) + 1))})"


def job_row(job: Job) -> tuple[Any, ...]:
    """The row to insert for ``job`` (bulk enqueue calls this 100,000 times: keep it lean).

    The last value is ``ready``: 1 for a claimable job already due when enqueued.
    """
    values = list(_FIELDS_OF(job))
    for position in _JSON_POSITIONS:
        values[position] = json.dumps(values[position]) if values[position] else None
    values.append(1 if is_due_at(job.state, job.run_at, job.created_at) else 0)
    return tuple(values)


def row_job(row: tuple[Any, ...]) -> Job:
    data = dict(zip(FIELD_COLUMNS, row, strict=True))
    for name in JSON_FIELDS:
        data[name] = json.loads(data[name]) if data[name] else None
    return Job.from_dict(data)
