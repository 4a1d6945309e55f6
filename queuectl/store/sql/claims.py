"""A claim in SQL, written once for every dialect: the due jobs are promoted, the gated queues
(paused, or with a concurrency or rate limit) are read, and the chosen rows are marked taken, all
in the caller's one transaction.

The rules (what a claim may take, a rate's window) come from :mod:`queuectl.core.lifecycle`; this
module only spells them as statements on the partial claim indexes.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from queuectl.core.defaults import PROMOTE_BATCH
from queuectl.core.lifecycle import events as log_events
from queuectl.core.lifecycle import rates
from queuectl.core.models import PROCESSING, Job
from queuectl.store.sql.dialect import SqlDialect
from queuectl.store.sql.dialect import dialect_errors as _dialect_errors
from queuectl.store.sql.log import DUE_COLUMNS, event_row
from queuectl.store.sql.log import EVENT_INSERT as _EVENT_SQL
from queuectl.store.sql.schema import CLAIMABLE_SQL, JOB_COLUMNS, row_job

# the queues a claim cannot take from freely: paused ones, and those with a concurrency or rate limit
_GATE_WHERE = "paused = 1 OR max_running IS NOT NULL OR rate_count IS NOT NULL"
_GATES = f"SELECT name, paused, max_running, rate_count FROM queues WHERE {_GATE_WHERE}"
_GATED = f"SELECT name FROM queues WHERE {_GATE_WHERE}"
LIMITS_TTL_S = 1.0
# a claim's write (see SqlClaims._take): constant texts, prepared once per connection
_TAKE_SET = (
    f"UPDATE jobs SET state = '{PROCESSING}', locked_by = ?, lease_expires_at = ?, attempts = attempts + 1, "
    "started_at = ?, updated_at = ?, progress_done = NULL, progress_total = NULL, progress_message = NULL, "
    "progress_at = NULL"
)
_TAKE_SQL = f"{_TAKE_SET} WHERE id = ?"


class SqlClaims(SqlDialect):
    """``claim`` (and the claim half of a finish that claims the next jobs) as SQL."""

    # appended to a claim's inner SELECT: PostgreSQL locks the rows it takes and skips those another
    # claim holds (SQLite has one writer at a time: nothing to lock)
    skip_locked = ""
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

    if TYPE_CHECKING:  # SqlLog's: the `due` events of the promoted jobs

        def _log_due(self, conn: Any, promoted: list[tuple[Any, ...]], now: float) -> None: ...

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
