"""The jobs table in SQL, written once for every SQL dialect (SQLite and PostgreSQL).

A mixin: the dialect class provides the connection (``_conn``), the transaction (``_write``) and
the few spellings that differ (``hint`` for an index hint, ``skip_locked`` for a claim's row locks,
``bucket`` for a time bucket, ``integrity_error``, ``guarded`` for a statement that may fail on a
unique key). Statements are written with ``?`` placeholders (the PostgreSQL connection spells them
``%s``). No rule is decided here: the states a statement
names come from :mod:`queuectl.core.lifecycle`, spelled out where a partial index needs them.
"""

from __future__ import annotations

import contextlib
import json
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from queuectl.core.defaults import PROMOTE_BATCH
from queuectl.core.defaults import SQLITE_INSERT_BATCH as _INSERT_BATCH
from queuectl.core.errors import DuplicateJobId, UniqueKeyTaken
from queuectl.core.lifecycle import AFTER, HOOK_DUE, KEY_HOLDING, ON_FAILURE, WhenHooked, is_due, rates
from queuectl.core.lifecycle import events as log_events
from queuectl.core.models import (
    COMPLETED,
    DEAD,
    FAILED,
    PROCESSING,
    STAGED,
    STATES,
    WAITING,
    Attempt,
    Event,
    Job,
    Lease,
)
from queuectl.store.base import translating_errors
from queuectl.store.sql.counters import SQLITE_READ
from queuectl.store.sql.log import DUE_COLUMNS, SqlLog, enqueued_rows, event_row
from queuectl.store.sql.log import EVENT_INSERT as _EVENT_SQL
from queuectl.store.sql.schema import (
    CLAIMABLE_SQL,
    FAILURES_SQL,
    FIELD_COLUMNS,
    INSERT_SQL,
    JOB_COLUMNS,
    JSON_FIELDS,
    job_row,
    row_job,
    sql_list,
)

_STORED_STATES = (*STATES, STAGED)


def _classify(store: Any, exc: Exception) -> Exception | None:
    return store.classify_error(exc)


_dialect_errors = translating_errors(_classify)  # the driver's errors as queuectl's, per dialect


# the queues a claim cannot take from freely: paused ones, and those with a concurrency or rate limit
_GATE_WHERE = "paused = 1 OR max_running IS NOT NULL OR rate_count IS NOT NULL"
_GATES = f"SELECT name, paused, max_running, rate_count FROM queues WHERE {_GATE_WHERE}"
_GATED = f"SELECT name FROM queues WHERE {_GATE_WHERE}"
LIMITS_TTL_S = 1.0
# a claim's write (see SqlJobs._take): constant texts, prepared once per connection
_TAKE_SET = (
    f"UPDATE jobs SET state = '{PROCESSING}', locked_by = ?, lease_expires_at = ?, attempts = attempts + 1, "
    "started_at = ?, updated_at = ?, progress_done = NULL, progress_total = NULL, progress_message = NULL, "
    "progress_at = NULL"
)
_TAKE_SQL = f"{_TAKE_SET} WHERE id = ?"
_CHILD_COLUMNS = ", ".join("c." + column for column in FIELD_COLUMNS.values())


class SqlJobs(SqlLog):
    """The job primitives of :class:`~queuectl.store.base.Store` as SQL statements."""

    _conn: Any
    _update_sql: dict[tuple[Any, ...], str]
    _unflushed: list[Job] | tuple[()] = ()  # the rows of an insert_jobs in progress, not yet sent
    integrity_error: type[Exception] = Exception  # the driver's constraint violation
    # appended to a claim's inner SELECT: PostgreSQL locks the rows it takes and skips those another
    # claim holds (SQLite has one writer at a time: nothing to lock)
    skip_locked = ""
    # row locks that serialise dependencies where transactions run side by side (PostgreSQL; on
    # SQLite the one writer serialises everything): the parents an insert reads are share-locked,
    # so none finishes unseen by a child not yet committed; a settling parent locks the children it
    # found, so two parents finishing together settle a shared child one after the other
    parent_lock = ""
    child_lock = ""
    # True: a claim leaves paused queues out in its own statement (one round trip less on a server);
    # False: it reads them first, which lets SQLite's planner use the plain partial index
    paused_inline = False
    queue_lock = ""  # PostgreSQL: " FOR UPDATE", so claims of a limited queue take turns
    # True: a claim reads its rows, then writes them by id (SQLite: cheaper than one UPDATE with a
    # subquery); False: one UPDATE ... RETURNING (PostgreSQL: one round trip, not two)
    claim_by_id = False
    _limits: set[str] = set()
    _limits_read = float("-inf")
    _next_slot: float | None = None  # when a rate-limited queue that had to wait has room again
    _inserting = False

    if TYPE_CHECKING:  # provided by the dialect

        def _write(self, conn: Any = None) -> AbstractContextManager[Any]: ...

    def classify_error(self, exc: Exception) -> Exception | None:
        """The queuectl error a driver exception means (None: not one of ours, re-raise it)."""
        return None

    # the key a set-based update selects rows by: SQLite's rowid follows insertion order, so a
    # batch is updated in the order it was written (by random job id it thrashed the page cache)
    row_key = "id"

    def hint(self, index: str) -> str:
        """The dialect's spelling of "use this index" (none by default)."""
        return ""

    def bucket(self, column: str) -> str:
        """``column / ?`` rounded down to an integer (the time bucket of :meth:`throughput`)."""
        return f"CAST({column} / ? AS INTEGER)"

    def guarded(self, conn: Any) -> AbstractContextManager[Any]:
        """Around a statement that may break a unique key and is then asked about: on PostgreSQL a
        failed statement aborts the whole transaction unless a savepoint takes it back; on SQLite
        the failed statement alone is undone, so nothing is needed."""
        return contextlib.nullcontext()

    # --- jobs: writing ----------------------------------------------------------------------

    @_dialect_errors
    def insert_jobs(self, jobs: Iterable[Job]) -> int:
        count = 0
        batch: list[Job] = []
        labels: list[tuple[str, str]] = []
        self._unflushed = batch  # job_states, asked while the iterable runs, sees these too
        self._inserting = True
        try:
            with self._write() as conn, self._all_or_nothing(conn):
                for job in jobs:
                    batch.append(job)
                    if job.labels:
                        labels.extend((f"{key}={value}", job.id) for key, value in job.labels.items())
                    if job.after or job.on_failure_of:
                        self._insert_batch(conn, batch)
                        conn.executemany(
                            "INSERT INTO job_deps (child, parent, kind) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                            [(job.id, parent, AFTER) for parent in job.after]
                            + ([(job.id, job.on_failure_of, ON_FAILURE)] if job.on_failure_of else []),
                        )
                    elif len(batch) >= _INSERT_BATCH:
                        self._insert_batch(conn, batch)
                    count += 1
                self._insert_batch(conn, batch)
                if labels:
                    conn.executemany("INSERT INTO job_labels (label, job) VALUES (?, ?)", labels)
        finally:
            self._unflushed = ()  # a failed insert leaves nothing behind to be flushed later
            self._inserting = False
        return count

    @contextlib.contextmanager
    def _all_or_nothing(self, conn: Any) -> Iterator[None]:
        """A savepoint: inside a larger unit of work, a refused insert takes back all its rows
        (not just the refused batch), while the unit goes on."""
        conn.execute("SAVEPOINT insert_jobs")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO insert_jobs")
            raise
        finally:
            conn.execute("RELEASE insert_jobs")

    def _insert_batch(self, conn: Any, batch: list[Job]) -> None:
        """Insert and empty ``batch`` with one executemany; on a conflict, name the job that caused it."""
        if not batch:
            return
        conn.execute("SAVEPOINT insert_batch")
        try:
            conn.executemany(INSERT_SQL, [job_row(job) for job in batch])
        except self.integrity_error:
            conn.execute("ROLLBACK TO insert_batch")
            for job in batch:  # one by one, to find the culprit
                try:
                    conn.execute(INSERT_SQL, job_row(job))
                except self.integrity_error as exc:
                    conn.execute("ROLLBACK TO insert_batch")  # PostgreSQL: the transaction works again
                    raise self._insert_conflict(conn, job, exc) from None
        finally:
            conn.execute("RELEASE insert_batch")
        conn.executemany(_EVENT_SQL, enqueued_rows(batch))  # committed with the jobs, or not at all
        batch.clear()

    @staticmethod
    def _insert_conflict(conn: Any, job: Job, exc: Exception) -> Exception:
        if "unique_key" in str(exc):
            holder = conn.execute(
                f"SELECT id, state FROM jobs WHERE unique_key = ? AND state IN {sql_list(KEY_HOLDING)}",
                (job.unique_key,),
            ).fetchone()
            return UniqueKeyTaken(job.unique_key, (holder[0], holder[1]) if holder else None)
        return DuplicateJobId(job.id)

    @_dialect_errors
    def claim(self, worker_id: str, queues: list[str] | None, now: float, lease: float, limit: int = 1) -> list[Job]:
        with self._write() as conn:
            return self._claim_in(conn, worker_id, queues, now, lease, limit)

    def _claim_in(
        self,
        conn: Any,
        worker_id: str,
        queues: list[str] | None,
        now: float,
        lease: float,
        limit: int,
    ) -> list[Job]:
        claimed: list[Job] = []
        self._next_slot = None
        promoted = conn.execute(  # the jobs whose time has come join the claim indexes, each logging
            # `due`; a bounded number per claim: a mass due at once (a published enqueue --file, a
            # million --delay 1h jobs) is promoted over many claims, never in one long transaction.
            # The earliest first as the run_at index is walked (no ORDER BY: that would let
            # PostgreSQL sort all the due ones)
            f"UPDATE jobs SET ready = 1 WHERE id IN (SELECT id FROM jobs {self.hint('jobs_not_due')} "
            f"WHERE {CLAIMABLE_SQL} AND ready = 0 AND run_at <= ? LIMIT ?{self.skip_locked}) RETURNING {DUE_COLUMNS}",
            (now, PROMOTE_BATCH),
        ).fetchall()
        if promoted:  # nothing more to do on the busy path, where nothing is waiting for its time
            self._log_due(conn, promoted, now)
        paused, limited = self._gates(conn)
        take = (worker_id, now, lease)
        for queue in queues if queues else [None]:
            if queue in paused or len(claimed) >= limit:
                continue
            if queue in limited:
                claimed.extend(self._take_limited(conn, queue, take, limit - len(claimed)))
                continue
            if queue is None:
                where, params = "", []
                if paused or limited:
                    gated = sorted(paused | set(limited))
                    where = f" AND queue NOT IN ({', '.join('?' * len(gated))})"
                    params = list(gated)
                index = "jobs_ready_any"
            else:
                where, params, index = " AND queue = ?", [queue], "jobs_ready_queue"
            if self.paused_inline:
                where += f" AND queue NOT IN ({_GATED})"
            claimed.extend(self._take(conn, where, params, index, take, limit - len(claimed)))
        for queue in sorted(limited) if not queues else ():
            if len(claimed) < limit:
                claimed.extend(self._take_limited(conn, queue, take, limit - len(claimed)))
        if claimed:
            conn.executemany(_EVENT_SQL, [event_row(log_events.claimed(job, now)) for job in claimed])
        return claimed

    def _gates(self, conn: Any) -> tuple[set[str], set[str]]:
        """The paused queues and the queues with a concurrency or rate limit. PostgreSQL leaves
        both out of its claims in the statement itself, and reads the limited ones (to claim them
        one by one, under their row lock) at most once a second: a new limit holds back its queue
        at once, and its jobs are claimed again within a second."""
        if not self.paused_inline:
            rows = conn.execute(_GATES).fetchall()
            return {row[0] for row in rows if row[1]}, {row[0] for row in rows if row[2] is not None or row[3]}
        moment = time.monotonic()
        if moment - self._limits_read > LIMITS_TTL_S:
            rows = conn.execute(_GATES).fetchall()
            self._limits = {row[0] for row in rows if row[2] is not None or row[3] is not None}
            self._limits_read = moment
        return set(), self._limits

    def _take_limited(self, conn: Any, queue: str, take: tuple[str, float, float], want: int) -> list[Job]:
        """Claim from a queue with a concurrency or rate limit, in this transaction under the
        queue row's lock (PostgreSQL: FOR UPDATE, so concurrent claims of that queue take turns;
        SQLite: one writer at a time anyway): at most ``max_running - processing`` jobs, and at
        most what the rate's window has left (:func:`queuectl.core.rates.room`), whose log of
        claim times is written back in the same transaction."""
        row = conn.execute(
            "SELECT paused, max_running, rate_count, rate_window, rate_log FROM queues "
            f"WHERE name = ?{self.queue_lock}",
            (queue,),
        ).fetchone()
        if row is not None and row[0]:
            return []  # paused meanwhile
        if row is None or (row[1] is None and row[2] is None):  # the limits were lifted since they were read
            return self._take(conn, " AND queue = ?", [queue], "jobs_ready_queue", take, want)
        room = want
        if row[1] is not None:
            running = conn.execute(
                f"SELECT count(*) FROM jobs WHERE state = '{PROCESSING}' AND queue = ?", (queue,)
            ).fetchone()[0]
            room = min(room, int(row[1]) - int(running))
        if room <= 0 or row[2] is None:
            return self._take(conn, " AND queue = ?", [queue], "jobs_ready_queue", take, room) if room > 0 else []
        now, stored = take[1], json.loads(row[4]) if row[4] else []
        log = rates.recent(stored, now, float(row[3]))
        room, slot = rates.room(log, int(row[2]), float(row[3]), now, room)
        if slot is not None:
            self._next_slot = slot if self._next_slot is None else min(self._next_slot, slot)
        taken = self._take(conn, " AND queue = ?", [queue], "jobs_ready_queue", take, room) if room > 0 else []
        if taken or len(log) != len(stored):
            log.extend([now] * len(taken))
            conn.execute("UPDATE queues SET rate_log = ? WHERE name = ?", (json.dumps(log), queue))
        return taken

    def next_slot(self) -> float | None:
        return self._next_slot

    def _take(
        self, conn: Any, where: str, params: list[Any], index: str, take: tuple[str, float, float], count: int
    ) -> list[Job]:
        worker_id, now, lease = take
        choose = (
            f"FROM jobs {self.hint(index)} WHERE {CLAIMABLE_SQL} AND ready = 1 AND run_at <= ?{where} "
            f"ORDER BY priority DESC, created_at LIMIT ?{self.skip_locked}"
        )
        if self.claim_by_id:
            return self._take_by_id(conn, choose, [now, *params, count], worker_id, now, now + lease)
        rows = conn.execute(
            f"{_TAKE_SET} WHERE id IN (SELECT id {choose}) RETURNING {JOB_COLUMNS}",
            [worker_id, now + lease, now, now, now, *params, count],
        ).fetchall()
        # RETURNING gives no order: restore the claim order within this queue
        return sorted((row_job(row) for row in rows), key=lambda job: (-job.priority, job.created_at))

    def _take_by_id(
        self, conn: Any, choose: str, params: list[Any], worker_id: str, now: float, expires: float
    ) -> list[Job]:
        """Read the due rows, then mark them taken by id: on SQLite the one-statement ``UPDATE ...
        WHERE id IN (SELECT ...) RETURNING`` cost ~3 x the CPU (~75 against ~25 us). Safe as two
        statements because SQLite has one writer, so nobody takes the rows in between."""
        rows = conn.execute(f"SELECT {JOB_COLUMNS} {choose}", params).fetchall()
        if not rows:
            return []
        conn.executemany(_TAKE_SQL, [(worker_id, expires, now, now, row[0]) for row in rows])
        jobs = [row_job(row) for row in rows]
        for job in jobs:  # what the UPDATE wrote, without reading it back
            job.state, job.locked_by, job.lease_expires_at = PROCESSING, worker_id, expires
            job.attempts += 1
            job.started_at = job.updated_at = now
            job.progress_done = job.progress_total = job.progress_message = job.progress_at = None
        return jobs

    @_dialect_errors
    def update_job(
        self,
        job_id: str,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...] | None = None,
        lease: Lease | None = None,
        expired_before: float | None = None,
        hook_state: str | None = None,
        attempt: Attempt | None = None,
        keep_outputs: int = 10,
        events: Sequence[Event] = (),
    ) -> bool:
        # a finish runs this for every job: no per-field Python loop on the way to the statement
        params = list(changes.values())
        hook_value = changes.get("hook_state")
        hooked = type(hook_value) is WhenHooked
        if hooked:
            params[list(changes).index("hook_state")] = hook_value.value  # type: ignore[union-attr]
        shape = (tuple(changes), hooked, states, lease is not None, expired_before is not None, hook_state is not None)
        sql = self._update_sql.get(shape)
        if sql is None:
            sql = self._update_sql[shape] = self._build_update(changes, states, shape)
        if "state" in changes:
            params.append(1 if is_due(changes) else 0)
        params.append(job_id)
        if lease is not None:
            params.append(lease.worker_id)
            params.append(lease.attempt)
        if expired_before is not None:
            params.append(expired_before)
        if hook_state is not None:
            params.append(hook_state)
        with self._write() as conn:
            try:
                if lease is None and "state" in changes:  # only such a change can take a unique key
                    with self.guarded(conn):
                        written = conn.execute(sql, params).rowcount == 1
                else:
                    written = conn.execute(sql, params).rowcount == 1
            except self.integrity_error:
                row = conn.execute("SELECT unique_key FROM jobs WHERE id = ?", (job_id,)).fetchone()
                raise UniqueKeyTaken(row[0] if row else None) from None
            if written and (attempt is not None or events):
                self._log_in(conn, job_id, attempt, keep_outputs, events)
            return written

    @_dialect_errors
    def update_jobs(
        self,
        changes: dict[str, Any],
        *,
        states: tuple[str, ...],
        event: Event | None = None,
        batch: str | None = None,
        parentless: bool = False,
        limit: int | None = None,
    ) -> int:
        assert all(state in _STORED_STATES for state in states)
        assert not any(isinstance(v, WhenHooked) for v in changes.values())
        sets = [f"{FIELD_COLUMNS[name]} = ?" for name in changes]
        params = [_json(value) if name in JSON_FIELDS else value for name, value in changes.items()]
        if "state" in changes:
            sets.append("ready = ?")
            params.append(1 if is_due(changes) else 0)
        where = f"state IN {sql_list(states)}"
        filters: list[Any] = []
        if batch is not None:
            where += " AND batch = ?"
            filters.append(batch)
        if parentless:
            where += " AND after_ids IS NULL AND on_failure_of IS NULL"
        if limit is not None:  # by rowid where there is one: a batch is walked in the order it was written
            index = self.hint("jobs_batch") if batch is not None else ""
            where = f"{self.row_key} IN (SELECT {self.row_key} FROM jobs {index} WHERE {where} LIMIT ?)"
            filters.append(limit)
        params.extend(filters)
        with self._write() as conn:
            try:
                if event is not None:  # before the update: the rows it will write
                    self._log_events_for(conn, event, where, tuple(filters))
                if changes.get("state") == STAGED:
                    self._unlog_enqueued_for(conn, where, tuple(filters))
                return int(conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", params).rowcount)
            except self.integrity_error:
                raise UniqueKeyTaken(None) from None

    @staticmethod
    def _build_update(changes: dict[str, Any], states: tuple[str, ...] | None, shape: tuple[Any, ...]) -> str:
        sets = []
        for name, value in changes.items():
            assert name not in JSON_FIELDS, f"{name} is not updated in place"
            column = FIELD_COLUMNS[name]
            if isinstance(value, WhenHooked):
                sets.append(f"{column} = CASE WHEN on_finish IS NOT NULL THEN ? ELSE {column} END")
            else:
                sets.append(f"{column} = ?")
        if "state" in changes:
            sets.append("ready = ?")
        where = "id = ?"
        if states:
            assert all(state in _STORED_STATES for state in states), states
            where += f" AND state IN {sql_list(states)}"  # spelled out: see waiting_children
        if shape[3]:
            where += f" AND state = '{PROCESSING}' AND locked_by = ? AND attempts = ?"
        if shape[4]:
            where += " AND lease_expires_at <= ?"
        if shape[5]:
            where += " AND hook_state = ?"
        return f"UPDATE jobs SET {', '.join(sets)} WHERE {where}"

    @_dialect_errors
    def purge(
        self,
        states: list[str],
        finished_before: float | None = None,
        limit: int | None = None,
        batch: str | None = None,
        job_id: str | None = None,
    ) -> int:
        where, params = self._purge_filter(states, finished_before)
        if batch is not None:
            where += " AND batch = ?"
            params.append(batch)
        if job_id is not None:
            where += " AND id = ?"
            params.append(job_id)
        if limit is not None:
            where = f"id IN (SELECT id FROM jobs WHERE {where} LIMIT ?)"
            params.append(limit)
        with self._write() as conn:
            conn.execute(f"DELETE FROM job_deps WHERE child IN (SELECT id FROM jobs WHERE {where})", params)
            conn.execute(f"DELETE FROM attempts WHERE job_id IN (SELECT id FROM jobs WHERE {where})", params)
            conn.execute(f"DELETE FROM job_labels WHERE job IN (SELECT id FROM jobs WHERE {where})", params)
            return conn.execute(f"DELETE FROM jobs WHERE {where}", params).rowcount

    @_dialect_errors
    def count_purgeable(self, states: list[str], finished_before: float | None = None) -> int:
        where, params = self._purge_filter(states, finished_before)
        return self._conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0]

    @staticmethod
    def _purge_filter(states: list[str], finished_before: float | None) -> tuple[str, list[Any]]:
        where = f"state IN ({', '.join('?' * len(states))})"
        params: list[Any] = list(states)
        if finished_before is not None:
            where += " AND finished_at < ?"
            params.append(finished_before)
        return where, params

    # --- jobs: reading ----------------------------------------------------------------------

    @_dialect_errors
    def get(self, job_id: str, staged: bool = False) -> Job | None:
        row = self._conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row_job(row) if row and (staged or row[2] != STAGED) else None

    @_dialect_errors
    def list_jobs(
        self,
        state: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        before: float | None = None,
        batch: str | None = None,
        labels: list[str] | None = None,
    ) -> list[Job]:
        clauses: list[str] = [] if state else [f"state != '{STAGED}'"]
        params: list[Any] = []
        for label in labels or ():  # by the label rows' primary key, never a scan of the jobs
            clauses.append("id IN (SELECT job FROM job_labels WHERE label = ?)")
            params.append(label)
        if batch is not None:
            clauses.append("batch = ?")
            params.append(batch)
        if before is not None:
            clauses.append("created_at < ?")
            params.append(before)
        if state:
            clauses.append("state = ?")
            params.append(state)
        if queue:
            clauses.append("queue = ?")
            params.append(queue)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs {where}ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [row_job(row) for row in rows]

    @_dialect_errors
    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        if self._unflushed:  # an insert is in progress in this transaction: its rows first
            self._insert_batch(self._conn, self._unflushed)
        rows = self._conn.execute(
            f"SELECT id, state FROM jobs WHERE id IN ({', '.join('?' * len(job_ids))})"
            f"{self.parent_lock if self._inserting else ''}",
            job_ids,
        ).fetchall()
        return dict(rows)

    @_dialect_errors
    def waiting_children(self, parent_id: str, any_state: bool = False, limit: int | None = None) -> list[Job]:
        if any_state:
            sql = (
                f"SELECT {_CHILD_COLUMNS} FROM job_deps d JOIN jobs c ON c.id = d.child "
                f"WHERE d.parent = ? AND c.state != '{STAGED}' ORDER BY c.created_at, c.id"
            )
            if limit is None:
                rows = self._conn.execute(sql, (parent_id,)).fetchall()
            else:  # twice the rows: a child may name the parent twice (after and on failure)
                rows = self._conn.execute(sql + " LIMIT ?", (parent_id, 2 * limit)).fetchall()
            unique = list({row[0]: row for row in rows}.values())
            return [row_job(row) for row in unique[:limit]]
        # the state spelled out, not bound: a bound state makes SQLite re-plan the statement each
        # time (partial indexes on state), which cost a finish ~50 us for a query that is empty
        rows = self._conn.execute(
            f"SELECT {_CHILD_COLUMNS} FROM job_deps d JOIN jobs c ON c.id = d.child "
            f"WHERE d.parent = ? AND c.state = '{WAITING}'{self.child_lock}",
            (parent_id,),
        ).fetchall()
        children = {row[0]: row for row in rows}  # a child naming the parent twice (after and on failure)
        return [row_job(row) for row in children.values()]

    @_dialect_errors
    def expired(self, now: float, limit: int = 100) -> list[Job]:
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = '{PROCESSING}' AND lease_expires_at < ? LIMIT ?",
            (now, limit),
        ).fetchall()
        return [row_job(row) for row in rows]

    @_dialect_errors
    def hooks_due(self, limit: int = 1) -> list[Job]:
        rows = self._conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE hook_state = '{HOOK_DUE}' ORDER BY updated_at LIMIT ?", (limit,)
        ).fetchall()
        return [row_job(row) for row in rows]

    # the counters kept by triggers (see :mod:`queuectl.store.sql.counters`): a read of a few
    # rows per queue, whatever the number of jobs
    counters_sql = SQLITE_READ

    @_dialect_errors
    def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for queue, state, count, _, _ in self._conn.execute(self.counters_sql):
            if count:
                result.setdefault(queue, {})[state] = int(count)
        return result

    @_dialect_errors
    def throughput(self, since: float, bucket: float = 60.0) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {"completed": {}, "failed": {}}
        queries = (
            (
                "completed",
                f"SELECT {self.bucket('finished_at')}, count(*) FROM jobs "
                f"WHERE state = '{COMPLETED}' AND finished_at >= ? GROUP BY 1",
            ),
            (
                "failed",
                f"SELECT {self.bucket('updated_at')}, count(*) FROM jobs "
                f"WHERE {FAILURES_SQL} AND updated_at >= ? GROUP BY 1",
            ),
        )
        for name, sql in queries:
            for slot, count in self._conn.execute(sql, (bucket, since)):
                result[name][slot] = result[name].get(slot, 0) + count
        return result

    @_dialect_errors
    def recent_failures(self, limit: int = 5) -> list[Job]:
        # one index walk per state, merged: a single IN (...) ORDER BY would sort every failure
        rows = self._conn.execute(
            f"SELECT * FROM (SELECT {JOB_COLUMNS} FROM jobs WHERE state = '{FAILED}' "
            "ORDER BY updated_at DESC LIMIT ?) f "
            f"UNION ALL SELECT * FROM (SELECT {JOB_COLUMNS} FROM jobs WHERE state = '{DEAD}' "
            "ORDER BY updated_at DESC LIMIT ?) d",
            (limit, limit),
        ).fetchall()
        jobs = sorted((row_job(row) for row in rows), key=lambda job: job.updated_at, reverse=True)
        return jobs[:limit]

    @_dialect_errors
    def duration_totals(self) -> tuple[int, float]:
        count, total = 0, 0.0
        for _, state, _, timed, seconds in self._conn.execute(self.counters_sql):
            if state == COMPLETED and timed:
                count, total = count + int(timed), total + float(seconds)
        return count, total

    @_dialect_errors
    def next_due(self, queues: list[str] | None) -> float | None:
        # ORDER BY ... LIMIT 1 on the partial indexes: one index probe, whatever the queue holds
        if not queues:
            row = self._conn.execute(
                f"SELECT run_at FROM jobs {self.hint('jobs_due')} WHERE {CLAIMABLE_SQL} ORDER BY run_at LIMIT 1"
            ).fetchone()
            return row[0] if row else None
        due = []
        for queue in queues:
            row = self._conn.execute(
                f"SELECT run_at FROM jobs {self.hint('jobs_due_queue')} WHERE {CLAIMABLE_SQL} AND queue = ? "
                "ORDER BY run_at LIMIT 1",
                (queue,),
            ).fetchone()
            if row:
                due.append(row[0])
        return min(due) if due else None


def _json(value: Any) -> str | None:
    import json

    return json.dumps(value) if value else None
