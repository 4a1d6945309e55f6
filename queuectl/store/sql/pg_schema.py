"""The PostgreSQL schema: SQLite's tables and partial indexes, spelled for PostgreSQL, and its
forward migrations, counted in a version table.

The tables are the SQLite ones (:data:`queuectl.store.sql.schema.SCHEMA`, generated from the
lifecycle's state sets), so both dialects keep the same columns and the same partial indexes;
only the float type is spelled differently. Each later change appends one migration to
:data:`MIGRATIONS`; a database is brought forward one step at a time, never back.
"""

from __future__ import annotations

import re
from typing import Any

from queuectl.core.errors import StoreUnavailable
from queuectl.store.sql.schema import SCHEMA

# REAL is a 4-byte float on PostgreSQL: times need the 8 bytes SQLite's REAL has
PG_SCHEMA = re.sub(r"\bREAL\b", "DOUBLE PRECISION", SCHEMA)

# migration n brings a database from version n to n + 1 (statements separated by ";")
MIGRATIONS: tuple[str, ...] = (
    PG_SCHEMA,
    # 2: a held job holds its unique key too (the partial index is remade from the state table)
    # and labels: a column and the job_labels rows that filters use
    "DROP INDEX IF EXISTS jobs_unique_active;"
    + next(part for part in PG_SCHEMA.split(";") if "jobs_unique_active" in part)
    + ";ALTER TABLE jobs ADD COLUMN IF NOT EXISTS labels TEXT;"
    + "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS retry_policy TEXT;"
    + "ALTER TABLE queues ADD COLUMN IF NOT EXISTS max_running INTEGER;"
    + ";".join(part for part in PG_SCHEMA.split(";") if "job_labels" in part),
)
SCHEMA_VERSION = len(MIGRATIONS)

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS queuectl_schema (version INTEGER NOT NULL)"


def current_version(conn: Any) -> int:
    """The schema version of the connection's schema (0: no queue there yet)."""
    row = conn.execute("SELECT to_regclass('queuectl_schema') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    row = conn.execute("SELECT max(version) FROM queuectl_schema").fetchone()
    return int(row[0] or 0)


def known_version(conn: Any) -> int:
    """The schema version, refused when it is newer than this queuectl knows (never migrated back)."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the queue's schema is version {version}, newer than this queuectl knows ({SCHEMA_VERSION}): upgrade it"
        )
    return version


def migrate(conn: Any) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION`, inside the caller's transaction.

    Processes starting together take turns on a transaction-scoped advisory lock, so only the
    first creates the tables; the others find them made.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('queuectl:' || current_schema()))")
    conn.execute(_VERSION_TABLE)
    version = known_version(conn)
    for step in MIGRATIONS[version:]:
        for statement in step.split(";"):
            if statement.strip():
                conn.execute(statement)
    if version < SCHEMA_VERSION:
        conn.execute("DELETE FROM queuectl_schema")
        conn.execute("INSERT INTO queuectl_schema (version) VALUES (?)", (SCHEMA_VERSION,))
