"""Counters of jobs per (queue, state), with the count and sum of durations, kept by triggers.

``status``, a dashboard refresh and a metrics scrape read these instead of a GROUP BY over every
job, so they cost the same at ten million jobs as at a thousand. Triggers on ``jobs`` keep them
in the very transaction of each insert, state change and delete: every code path (claims,
outcomes, recovery, purges, publishing a bulk enqueue, migrations) is covered by construction,
and the Python hot path is untouched. Staged jobs (a bulk enqueue not yet published) are never
counted, as they are invisible everywhere else.

- SQLite has one writer at a time: one row per (queue, state), updated in place.
- PostgreSQL runs workers side by side: one hot row per (queue, state) would make every claim
  wait for the last one to commit. Each change *inserts* delta rows instead (no row is ever
  updated, so no transaction waits on another); a read sums them, and the housekeeper folds
  them into one row per (queue, state) every minute (:data:`PG_COMPACT`), so a read sums
  what changed since, never the jobs. Inserts and deletes are counted per statement (a bulk
  enqueue adds one delta row per queue, not one per job); updates per changed row.

A database made before the counters is brought forward by a full recount (:data:`RECOUNT`).
"""

from __future__ import annotations

from queuectl.core.models import STAGED

# every (queue, state) that was ever counted keeps a row (a count back at 0 included): readers skip zeros
SQLITE_COUNTERS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS job_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,  -- jobs
    timed INTEGER NOT NULL,  -- of which with a duration
    seconds REAL NOT NULL,  -- the sum of their durations
    PRIMARY KEY (queue, state)
) WITHOUT ROWID""",
    f"""CREATE TRIGGER IF NOT EXISTS jobs_count_insert AFTER INSERT ON jobs WHEN NEW.state != '{STAGED}'
BEGIN
    INSERT INTO job_counts VALUES (NEW.queue, NEW.state, 1, NEW.duration IS NOT NULL, coalesce(NEW.duration, 0))
    ON CONFLICT (queue, state) DO UPDATE
    SET n = n + 1, timed = timed + excluded.timed, seconds = seconds + excluded.seconds;
END""",
    f"""CREATE TRIGGER IF NOT EXISTS jobs_count_delete AFTER DELETE ON jobs WHEN OLD.state != '{STAGED}'
BEGIN
    UPDATE job_counts SET n = n - 1, timed = timed - (OLD.duration IS NOT NULL),
        seconds = seconds - coalesce(OLD.duration, 0)
    WHERE queue = OLD.queue AND state = OLD.state;
END""",
    # heartbeats and progress write other columns: the trigger does not even fire for them
    f"""CREATE TRIGGER IF NOT EXISTS jobs_count_update AFTER UPDATE OF state, queue, duration ON jobs
WHEN OLD.state IS NOT NEW.state OR OLD.queue IS NOT NEW.queue OR OLD.duration IS NOT NEW.duration
BEGIN
    UPDATE job_counts SET n = n - 1, timed = timed - (OLD.duration IS NOT NULL),
        seconds = seconds - coalesce(OLD.duration, 0)
    WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO job_counts
    SELECT NEW.queue, NEW.state, 1, NEW.duration IS NOT NULL, coalesce(NEW.duration, 0) WHERE NEW.state != '{STAGED}'
    ON CONFLICT (queue, state) DO UPDATE
    SET n = n + 1, timed = timed + excluded.timed, seconds = seconds + excluded.seconds;
END""",
)

_DELTA = "INSERT INTO job_count_deltas (queue, state, n, timed, seconds)"
_PLPGSQL = "RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
PG_COUNTERS: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS job_count_deltas (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n BIGINT NOT NULL,
    timed BIGINT NOT NULL,
    seconds DOUBLE PRECISION NOT NULL
)""",
    "CREATE OR REPLACE FUNCTION queuectl_count_inserted() "
    + _PLPGSQL.format(
        body=f"{_DELTA} SELECT queue, state, count(*), count(duration), coalesce(sum(duration), 0) "
        f"FROM new_rows WHERE state <> '{STAGED}' GROUP BY queue, state;"
    ),
    "CREATE OR REPLACE FUNCTION queuectl_count_deleted() "
    + _PLPGSQL.format(
        body=f"{_DELTA} SELECT queue, state, -count(*), -count(duration), -coalesce(sum(duration), 0) "
        f"FROM old_rows WHERE state <> '{STAGED}' GROUP BY queue, state;"
    ),
    "CREATE OR REPLACE FUNCTION queuectl_count_updated() "
    + _PLPGSQL.format(
        body=f"IF OLD.state <> '{STAGED}' THEN {_DELTA} VALUES (OLD.queue, OLD.state, -1, "
        "-(OLD.duration IS NOT NULL)::int, -coalesce(OLD.duration, 0)); END IF; "
        f"IF NEW.state <> '{STAGED}' THEN {_DELTA} VALUES (NEW.queue, NEW.state, 1, "
        "(NEW.duration IS NOT NULL)::int, coalesce(NEW.duration, 0)); END IF;"
    ),
    "DROP TRIGGER IF EXISTS jobs_count_insert ON jobs",
    "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE PROCEDURE queuectl_count_inserted()",
    "DROP TRIGGER IF EXISTS jobs_count_delete ON jobs",
    "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE PROCEDURE queuectl_count_deleted()",
    "DROP TRIGGER IF EXISTS jobs_count_update ON jobs",
    "CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, queue, duration ON jobs FOR EACH ROW "
    "WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.queue IS DISTINCT FROM NEW.queue "
    "OR OLD.duration IS DISTINCT FROM NEW.duration) EXECUTE PROCEDURE queuectl_count_updated()",
)


def recount(table: str) -> tuple[str, ...]:
    """The counters rebuilt from every job (a migration, once): ``table`` is the dialect's."""
    return (
        f"DELETE FROM {table}",
        f"INSERT INTO {table} (queue, state, n, timed, seconds) "
        "SELECT queue, state, count(*), count(duration), coalesce(sum(duration), 0) "
        f"FROM jobs WHERE state <> '{STAGED}' GROUP BY queue, state",
    )


SQLITE_READ = "SELECT queue, state, n, timed, seconds FROM job_counts WHERE n <> 0 OR timed <> 0"
PG_READ = (
    "SELECT queue, state, sum(n), sum(timed), sum(seconds) FROM job_count_deltas "
    "GROUP BY queue, state HAVING sum(n) <> 0 OR sum(timed) <> 0"
)
# the deltas one snapshot sees, replaced by their sums: a delta committed meanwhile is not in the
# snapshot, so it is neither deleted nor summed, and stays for the next pass
PG_COMPACT = (
    "WITH gone AS (DELETE FROM job_count_deltas RETURNING queue, state, n, timed, seconds) "
    f"{_DELTA} SELECT queue, state, sum(n), sum(timed), sum(seconds) FROM gone "
    "GROUP BY queue, state HAVING sum(n) <> 0 OR sum(timed) <> 0"
)
