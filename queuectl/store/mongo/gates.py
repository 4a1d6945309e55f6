"""A MongoDB queue's gates in the claim: its concurrency limit (``queue limit``) and its rate
(``queue rate``), each exact without multi-document transactions. A mixin of
:class:`~queuectl.store.mongo.store.MongoStore`.

Both are places in an array of the queue's document, taken one per claim by a single conditional
update (``$push`` only while the array is shorter than the limit), so concurrent claims on every
host never pass it. A lost reply is resolved by looking for the place's token in the array.

- **Rate** (``rate_log``): a place is the claim's time; it leaves once it is out of the window,
  so a place whose claim never happened (a crash, a lost reply) frees itself within a window.
- **Limit** (``seats``): a place is a seat ``{t, at, bound}``; the job claim that follows writes
  the seat's token into the job (``seat``) in its own write, so a seat is taken exactly while a
  processing job carries its token. Nothing has to give a seat back when a job stops processing
  (finish, recovery, cancel, shutdown: five ways out, none of which touches the queue): a claim
  that finds the queue full reconciles first, freeing every seat whose job no longer processes
  (idempotent: any worker can do it at any time). A seat not yet bound to a job (its claim in
  flight, or its claimer crashed) is kept for :data:`SEAT_GRACE_S` unless a job holds it.
"""

from __future__ import annotations

from typing import Any

from queuectl.core.lifecycle import rates
from queuectl.core.models import PROCESSING
from queuectl.store.mongo import writes

SEAT_GRACE_S = 30.0  # an unbound seat (its claim in flight, or its claimer gone) is kept this long


class MongoGates:
    """Seats and rate places in the queues' documents; needs ``_queues`` and ``_jobs``."""

    _queues: Any
    _jobs: Any
    _next_slot: float | None = None  # when a rate-limited queue that had to wait has room again

    def next_slot(self) -> float | None:
        return self._next_slot

    def _push_place(self, queue: str, field: str, size: int, entry: dict[str, Any]) -> bool:
        """Add ``entry`` to the queue's ``field`` array if it holds fewer than ``size`` entries."""

        def write() -> bool:
            query = {"_id": queue, f"{field}.{size - 1}": {"$exists": False}}
            return bool(self._queues.update_one(query, {"$push": {field: entry}}).matched_count == 1)

        def applied() -> bool | None:
            return True if self._queues.find_one({"_id": queue, f"{field}.t": entry["t"]}, {"_id": 1}) else None

        return writes.resolved(write, applied)

    def _give_back(self, queue: str, field: str, token: str) -> None:
        self._queues.update_one({"_id": queue}, {"$pull": {field: {"t": token}}})

    # --- the rate ---------------------------------------------------------------------------

    def _trim_rate(self, queue: str, window: float, now: float) -> None:
        """The claims that left the window make room (idempotent)."""
        self._queues.update_one({"_id": queue}, {"$pull": {"rate_log": {"at": {"$lte": now - window}}}})

    def _take_slot(self, queue: str, rate: dict[str, Any], now: float) -> str | None:
        """One of a rated queue's places in its window; its token, or None when the window is
        full (noting when it frees, for :meth:`next_slot`)."""
        count, window = int(rate["rate_count"]), float(rate["rate_window"])
        token = writes.new_token()
        if self._push_place(queue, "rate_log", count, {"at": now, "t": token}):
            return token
        doc = self._queues.find_one({"_id": queue}, {"rate_log": 1}) or {}
        log = [float(entry["at"]) for entry in doc.get("rate_log", []) if entry.get("at") is not None]
        _, slot = rates.room(rates.recent(log, now, window), count, window, now, 1)
        if slot is not None:
            self._next_slot = slot if self._next_slot is None else min(self._next_slot, slot)
        return None

    # --- the limit --------------------------------------------------------------------------

    def _take_seat(self, queue: str, limit: int, now: float) -> str | None:
        """A seat in a limited queue (its token), or None when every seat is taken by a job
        still processing (after freeing those that are not). Jobs that were running before the
        limit was set hold no seat but count: their number only falls while the limit stays
        (every claim under it takes a seat), so counting them first errs on the safe side."""
        size = limit - self._jobs.count_documents({"queue": queue, "state": PROCESSING, "seat": None})
        if size <= 0:
            return None
        token = writes.new_token()
        seat = {"t": token, "at": now, "bound": False}
        if self._push_place(queue, "seats", size, seat):
            return token
        if self.free_seats(queue, now) and self._push_place(queue, "seats", size, seat):
            return token
        return None

    def _bind_seat(self, queue: str, token: str) -> None:
        """The job is claimed: its seat is free again as soon as the job stops processing. A
        lost reply leaves the seat unbound: still held while its job processes (it carries the
        token), freed after the grace once it does not."""
        try:
            self._queues.update_one({"_id": queue, "seats.t": token}, {"$set": {"seats.$.bound": True}})
        except Exception as exc:
            if not writes.is_uncertain(exc):
                raise

    def free_seats(self, queue: str, now: float) -> int:
        """Reconcile a queue's seats with its processing jobs: free every seat no processing
        job holds (an unbound one only after :data:`SEAT_GRACE_S`). Returns how many it freed."""
        doc = self._queues.find_one({"_id": queue}, {"seats": 1}) or {}
        seats = [seat for seat in doc.get("seats", []) if isinstance(seat, dict) and seat.get("t")]
        if not seats:
            return 0
        tokens = [seat["t"] for seat in seats]
        held = {job.get("seat") for job in self._jobs.find({"seat": {"$in": tokens}, "state": PROCESSING}, {"seat": 1})}
        free = [
            seat["t"]
            for seat in seats
            if seat["t"] not in held and (seat.get("bound") or float(seat.get("at") or 0) <= now - SEAT_GRACE_S)
        ]
        if free:
            self._queues.update_one({"_id": queue}, {"$pull": {"seats": {"t": {"$in": free}}}})
        return len(free)
