"""The attempt history and the event log in SQL, shared by every SQL dialect.

Both are written inside the transaction of the state change they describe (the callers in
:mod:`.jobs` and :mod:`.registry` call :meth:`SqlLog._log_in` with the connection of their
open write), so the log never claims a change that was rolled back. Statements use ``?``
placeholders and ``RETURNING``, which SQLite (3.35+) and PostgreSQL share.
"""

from __future__ import annotations

import json
import operator
from typing import Any, Iterable, Sequence

from queuectl.core.models import STAGED, Attempt, Event, Job
from queuectl.store.sql.dialect import SqlDialect
from queuectl.store.sql.dialect import dialect_errors as _dialect_errors

ATTEMPT_FIELDS = (
    "attempt",
    "worker",
    "host",
    "pid",
    "claimed_at",
    "started_at",
    "ended_at",
    "ended",
    "exit_code",
    "signal",
    "duration",
    "error",
    "output",
    "max_rss_kb",
    "cpu_s",
)
_ATTEMPT_VALUES = operator.attrgetter(*ATTEMPT_FIELDS)  # one C call per finish, in column order
_ATTEMPT_INSERT = (
    f"INSERT INTO attempts (job_id, n, {', '.join(ATTEMPT_FIELDS)}) VALUES "
    f"(?, (SELECT coalesce(max(n), 0) + 1 FROM attempts WHERE job_id = ?), {', '.join('?' * len(ATTEMPT_FIELDS))}) "
    "RETURNING n"
)
# an event without a queue gets its job's: a finish knows the job only by its lease
EVENT_INSERT = (
    "INSERT INTO events (at, kind, job_id, queue, state, data) "
    "VALUES (?, ?, ?, coalesce(?, (SELECT queue FROM jobs WHERE id = ?)), ?, ?)"
)
_EVENT_COLUMNS = "seq, at, kind, job_id, queue, state, data"


# json.dumps(..., separators=...) builds a new encoder on every call; every transition logs an event
_encode_data = json.JSONEncoder(separators=(",", ":")).encode


def event_row(event: Event) -> tuple[Any, ...]:
    data = _encode_data(event.data) if event.data else None
    return (event.at, event.kind, event.job_id, event.queue, event.job_id, event.state, data)


def enqueued_rows(jobs: Iterable[Job]) -> list[tuple[Any, ...]]:
    """The ``enqueued`` events of freshly inserted jobs (queue given: no lookup). A staged job
    (a chunk of a bulk enqueue) has none yet: publishing it logs it, as it becomes visible."""
    from queuectl.core.lifecycle import events

    return [event_row(events.enqueued(job)) for job in jobs if job.state != STAGED]


DUE_COLUMNS = "id, queue, state, run_at"  # what a promoted job's `due` event says


def _row_event(row: tuple[Any, ...]) -> Event:
    seq, at, kind, job_id, queue, state, data = row
    return Event(kind, at, job_id, queue, state, json.loads(data) if data else {}, seq)


class SqlLog(SqlDialect):
    """History and event primitives, in the dialect's connection and transaction."""

    def _log_in(
        self, conn: Any, job_id: str | None, attempt: Attempt | None, keep_outputs: int, events: Sequence[Event]
    ) -> None:
        """Write an attempt's row (trimming older outputs) and events, in the caller's transaction."""
        if attempt is not None:
            number = conn.execute(_ATTEMPT_INSERT, (job_id, job_id, *_ATTEMPT_VALUES(attempt))).fetchone()[0]
            if number > keep_outputs:  # only the latest keep_outputs attempts keep their output
                conn.execute(
                    "UPDATE attempts SET output = NULL WHERE job_id = ? AND n <= ? AND output IS NOT NULL",
                    (job_id, number - keep_outputs),
                )
        if events:
            conn.executemany(EVENT_INSERT, [event_row(event) for event in events])

    def _log_events_for(self, conn: Any, event: Event, where: str, params: tuple[Any, ...] = ()) -> None:
        """One copy of ``event`` for every job matching ``where`` (with ``params``; before a bulk update)."""
        data = _encode_data(event.data) if event.data else None
        conn.execute(
            f"INSERT INTO events (at, kind, job_id, queue, state, data) "
            f"SELECT ?, ?, id, queue, ?, ? FROM jobs WHERE {where} ORDER BY created_at, {self.row_key}",
            (event.at, event.kind, event.state, data, *params),
        )

    def _log_due(self, conn: Any, promoted: list[tuple[Any, ...]], now: float) -> None:
        """The ``due`` events of the jobs a claim just promoted (rows of :data:`DUE_COLUMNS`)."""
        from queuectl.core.lifecycle import events

        in_order = sorted(promoted, key=lambda row: (row[3], row[0]))  # by due time, then id (RETURNING has no order)
        rows = [event_row(events.due(job_id, queue, state, run_at, now)) for job_id, queue, state, run_at in in_order]
        conn.executemany(EVENT_INSERT, rows)

    def _unlog_enqueued_for(self, conn: Any, where: str, params: tuple[Any, ...] = ()) -> None:
        """Take back the ``enqueued`` events of the jobs matching ``where``, as they turn staged:
        the first transaction of a bulk enqueue that proved too long for it, before it commits,
        so no reader has seen them (publishing logs them again). On SQLite the freed numbers
        are the newest and are given out again: no gap for a follower to wait at."""
        conn.execute(
            f"DELETE FROM events {self.hint('events_job')} WHERE kind = 'enqueued' AND job_id IS NOT NULL "
            f"AND job_id IN (SELECT id FROM jobs WHERE {where})",
            params,
        )

    @_dialect_errors
    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self._conn.execute(
            f"SELECT n, {', '.join(ATTEMPT_FIELDS)} FROM attempts WHERE job_id = ? ORDER BY n", (job_id,)
        ).fetchall()
        return [Attempt(number=row[0], **dict(zip(ATTEMPT_FIELDS, row[1:], strict=True))) for row in rows]

    @_dialect_errors
    def read_events(
        self,
        after: int = 0,
        limit: int = 1000,
        job_id: str | None = None,
        queue: str | None = None,
        since: float | None = None,
        newest: bool = False,
    ) -> list[Event]:
        clauses: list[str] = ["seq > ?"]
        params: list[Any] = [after]
        if job_id is not None:
            clauses.append("job_id = ?")
            params.append(job_id)
        if queue is not None:
            clauses.append("queue = ?")
            params.append(queue)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since)
        order = "DESC" if newest else ""
        rows = self._conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY seq {order} LIMIT ?",
            [*params, limit],
        ).fetchall()
        found = [_row_event(row) for row in rows]
        return found[::-1] if newest else found

    @_dialect_errors
    def purge_events(self, before: float, limit: int) -> int:
        with self._write() as conn:
            return int(
                conn.execute(  # the oldest by seq (no index on time); never the newest: see SQLITE_SEQ
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?) AND at < ? "
                    "AND seq < (SELECT max(seq) FROM events)",
                    (limit, before),
                ).rowcount
            )
