"""The SQLite store's small tables: cron schedules, paused queues, runtime config, the worker
registry. A mixin of :class:`~queuectl.store.sql.sqlite.SqliteStore`, kept apart from the jobs."""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from queuectl.core.errors import Conflict, NotFound
from queuectl.core.models import Job, Schedule, WorkerInfo
from queuectl.store.sql.errors import translate_errors as _translate_errors
from queuectl.store.sql.schema import INSERT_SQL, job_row


class SqliteRegistry:
    """Schedules, queues, config and workers; needs ``_conn``, ``_write`` and ``notify``."""

    _conn: sqlite3.Connection

    if TYPE_CHECKING:  # provided by SqliteStore

        def _write(self, conn: sqlite3.Connection | None = None) -> AbstractContextManager[sqlite3.Connection]: ...

        def notify(self, stop: bool = False) -> None: ...

    # --- cron schedules ---------------------------------------------------------------------

    _SCHEDULE_COLUMNS = "name, cron, tz, spec, next_fire_at, last_fire_at, paused, created_at"

    @_translate_errors
    def add_schedule(self, schedule: Schedule) -> None:
        with self._write() as conn:
            try:
                conn.execute(
                    f"INSERT INTO schedules ({self._SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (schedule.name, schedule.cron, schedule.tz, json.dumps(schedule.spec),
                     schedule.next_fire_at, schedule.last_fire_at, int(schedule.paused),
                     schedule.created_at),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a schedule named {schedule.name!r} already exists") from None

    def _schedules(self, where: str = "", params: tuple[Any, ...] = ()) -> list[Schedule]:
        rows = self._conn.execute(
            f"SELECT {self._SCHEDULE_COLUMNS} FROM schedules {where} ORDER BY name", params
        ).fetchall()
        return [Schedule(name=r[0], cron=r[1], tz=r[2], spec=json.loads(r[3]), next_fire_at=r[4],
                         last_fire_at=r[5], paused=bool(r[6]), created_at=r[7]) for r in rows]

    @_translate_errors
    def list_schedules(self) -> list[Schedule]:
        return self._schedules()

    @_translate_errors
    def remove_schedule(self, name: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no schedule named {name!r}; see queuectl schedule list")

    @_translate_errors
    def set_schedule_paused(self, name: str, paused: bool, next_fire_at: float | None = None) -> None:
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE schedules SET paused = ?, next_fire_at = coalesce(?, next_fire_at) WHERE name = ?",
                (int(paused), next_fire_at, name),
            ).rowcount
            if updated == 0:
                raise NotFound(f"no schedule named {name!r}; see queuectl schedule list")

    @_translate_errors
    def due_schedules(self, now: float) -> list[Schedule]:
        return self._schedules("WHERE paused = 0 AND next_fire_at <= ?", (now,))

    @_translate_errors
    def fire_schedule(self, name: str, slot: float, next_fire_at: float, job: Job) -> bool:
        with self._write() as conn:
            moved = conn.execute(
                "UPDATE schedules SET next_fire_at = ?, last_fire_at = ? "
                "WHERE name = ? AND next_fire_at = ? AND paused = 0",
                (next_fire_at, slot, name, slot),
            ).rowcount
            if not moved:
                return False
            try:
                conn.execute(
                    INSERT_SQL,
                    job_row(job),
                )
            except sqlite3.IntegrityError:
                return False  # its unique key is still held by the previous run: skip this slot
        self.notify()
        return True

    # --- queues, config, workers ------------------------------------------------------------

    @_translate_errors
    def set_paused(self, queue: str, paused: bool) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO queues (name, paused) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET paused = excluded.paused",
                (queue, int(paused)),
            )
        if not paused:
            self.notify()

    @_translate_errors
    def paused_queues(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT name FROM queues WHERE paused = 1")}

    @_translate_errors
    def config_values(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM config").fetchall())

    @_translate_errors
    def set_config(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO config (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @_translate_errors
    def register_worker(self, info: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, state, started_at, last_heartbeat, "
                "queues, concurrency, current_jobs, stop_requested) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (info.id, info.host, info.pid, info.state, info.started_at, info.last_heartbeat,
                 info.queues, info.concurrency, json.dumps(info.current_jobs),
                 int(info.stop_requested)),
            )

    @_translate_errors
    def beat_worker(self, worker_id: str, now: float, state: str, current_jobs: list[str]) -> bool:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE workers SET last_heartbeat = ?, state = ?, current_jobs = ? WHERE id = ? "
                "RETURNING stop_requested",
                (now, state, json.dumps(current_jobs), worker_id),
            ).fetchone()
        return bool(row and row[0])

    @_translate_errors
    def list_workers(self) -> list[WorkerInfo]:
        rows = self._conn.execute(
            "SELECT id, host, pid, state, started_at, last_heartbeat, queues, concurrency, "
            "current_jobs, stop_requested FROM workers ORDER BY started_at DESC"
        ).fetchall()
        return [
            WorkerInfo(id=r[0], host=r[1], pid=r[2], state=r[3], started_at=r[4],
                       last_heartbeat=r[5], queues=r[6], concurrency=r[7],
                       current_jobs=json.loads(r[8]), stop_requested=bool(r[9]))
            for r in rows
        ]

    @_translate_errors
    def request_stop(self, worker_ids: list[str] | None = None) -> int:
        sql = "UPDATE workers SET stop_requested = 1 WHERE state != 'stopped'"
        params: list[str] = []
        if worker_ids:
            sql += f" AND id IN ({', '.join('?' * len(worker_ids))})"
            params = worker_ids
        with self._write() as conn:
            count = conn.execute(sql, params).rowcount
        self.notify(stop=True)
        return count

    @_translate_errors
    def prune_workers(self, seen_before: float) -> int:
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM workers WHERE state = 'stopped' OR last_heartbeat < ?", (seen_before,)
            ).rowcount

