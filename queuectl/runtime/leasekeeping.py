"""Keeping a worker's leases: the heartbeat that renews them, and what the worker does while the
store cannot be reached or refuses writes.

The rule a worker keeps through an outage: its jobs go on running while their leases may still
hold, and are killed before they could lapse (another host may then take the jobs over). While
writes are refused (a full disk) heartbeats renew the leases only, without the jobs' output, so
that the outcomes, which matter more, get the space SQLite frees. A mixin of
:class:`~queuectl.runtime.worker.Worker`: the loop calls :meth:`LeaseKeeping._heartbeat` at
each beat and the two ``_writes_*`` hooks after every write.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from queuectl.core import lifecycle
from queuectl.core.errors import StoreReadOnly, StoreUnavailable
from queuectl.runtime.loglines import log
from queuectl.service.config import load_config
from queuectl.service.workers import beat_worker

if TYPE_CHECKING:
    from queuectl.core.config import RuntimeConfig
    from queuectl.core.models import Lease, Outcome, WorkerInfo
    from queuectl.runtime.slots import Slot
    from queuectl.store import Store

STORE_DOWN = (StoreUnavailable, StoreReadOnly)  # a full disk is an outage too: keep the outcome


class LeaseKeeping:
    """The heartbeat and the outage rules of a worker (state: whether output is saved, when the
    last renewal succeeded, whether the last one failed)."""

    # set by the worker at its start
    saving_output: bool  # False while the store refuses writes (a full disk)
    store_down: bool  # the last renewal failed: leases run out unless one succeeds
    last_ok_beat: float  # monotonic: when the last renewal succeeded

    if TYPE_CHECKING:  # the worker's
        store: Store
        id: str
        config: RuntimeConfig
        slots: dict[str, Slot]
        unsent: list[tuple[Lease, Outcome]]
        stopping: bool
        info: WorkerInfo | None

        def request_stop(self, why: str) -> None: ...

    def _writes_refused(self, exc: Exception) -> None:
        """The store refuses writes (a full disk, above all): from now on heartbeats renew leases
        only. Each one re-saving up to 64 KiB of output per job would take back every bit of space
        SQLite frees, and the outcomes, which matter, would never get written."""
        if isinstance(exc, StoreReadOnly) and self.saving_output:
            self.saving_output = False
            log(self.id, "writes are refused: heartbeats stop saving job output until a write succeeds")

    def _writes_accepted(self) -> None:
        """A write went through and no outcome waits: heartbeats may save output again."""
        if not self.saving_output and not self.unsent:
            self.saving_output = True
            log(self.id, "writes succeed again: heartbeats save job output again")

    def _beat_output(self, slot: Slot) -> str | None:
        if slot.run is None or not self.saving_output:
            return None  # not taken: it stays marked as changed, and a later heartbeat saves it
        return slot.run.output(only_if_changed=not slot.output_unsaved)

    def _warn_of_skew(self) -> None:
        """One line when this host's clock is off the store's by over a quarter of the lease:
        leases are compared on the store's clock, but the operator should fix NTP."""
        skew = self.store.now() - time.time()
        if abs(skew) > self.config.lease / 4:
            direction = "behind" if skew > 0 else "ahead of"
            log(
                self.id,
                f"warning: this host's clock is {abs(skew):.1f}s {direction} the database's; using the database's",
            )

    def _heartbeat(self) -> None:
        """Renew the leases, then beat the registry, then reload the config: each step fails on
        its own, so the lost leases a successful renewal reports are acted on whatever follows."""
        now, mono = self.store.now(), time.monotonic()
        carried = [slot for slot in self.slots.values() if slot.stop_reason != "lost"]
        beats = [(slot.lease, self._beat_output(slot)) for slot in carried]
        with_output = [slot for slot, (_, output) in zip(carried, beats, strict=True) if output is not None]
        beats += [(lease, None) for lease, _ in self.unsent]
        progress = {}
        for running in carried:
            channel = running.run.progress if running.run is not None else None
            if channel is not None:
                channel.read()  # read here, not in the event loop: see runtime/progress.py
            report = channel.take_changed() if channel is not None else None
            if report is not None:
                progress[running.job.id] = report
        try:
            lost = lifecycle.heartbeat(self.store, self.id, beats, now, self.config.lease, progress)
        except STORE_DOWN as exc:
            for held in with_output:
                held.output_unsaved = True
            for job_id, report in progress.items():  # sent again at the next beat
                held_slot = self.slots.get(job_id)
                channel = held_slot.run.progress if held_slot and held_slot.run else None
                if channel is not None and not channel.changed:
                    channel.latest, channel.changed = report, True
            self._writes_refused(exc)
            self._on_store_down(exc)
            return
        for held in with_output:
            held.output_unsaved = False
        self._writes_accepted()
        self.last_ok_beat = mono  # the leases now run from the time they were written with
        self.store_down = False
        for job_id in lost:
            slot = self.slots.get(job_id)
            if slot is not None and slot.stop_reason != "lost":
                log(
                    self.id,
                    f"lost the lease on job {job_id} (cancelled or taken over): killing it",
                    "lease_lost",
                    job_id,
                )
                slot.stop_reason = "lost"
                if slot.run is not None:
                    slot.run.signal(signal.SIGKILL)
            self.unsent = [(lease, out) for lease, out in self.unsent if lease.job_id != job_id]
        try:
            state = "stopping" if self.stopping else "running"
            if beat_worker(self.store, self.id, now, state, sorted(self.slots), info=self.info):
                self.request_stop("stop requested through the database")
        except STORE_DOWN as exc:
            log(self.id, f"cannot update the worker registry: {exc}")
        try:
            self.config = load_config(self.store)
        except STORE_DOWN as exc:
            log(self.id, f"cannot reload the config: {exc}")

    def _on_store_down(self, exc: Exception) -> None:
        """Keep jobs running through a short outage; kill them before their leases could lapse."""
        log(self.id, f"heartbeat failed ({exc}); no contact for {time.monotonic() - self.last_ok_beat:.1f}s")
        self.store_down = True
        self._kill_if_leases_may_lapse()

    def _kill_if_leases_may_lapse(self) -> None:
        """Measured now (a failed call may have blocked for seconds) from the last renewal that
        succeeded: once the leases may lapse within a margin, another host may take the jobs."""
        if not self.slots:
            return
        silent_for = time.monotonic() - self.last_ok_beat
        margin = min(self.config.heartbeat, self.config.lease / 4)
        if silent_for >= self.config.lease - margin:
            for slot in self.slots.values():
                if slot.stop_reason != "lost":
                    log(self.id, f"killing job {slot.job.id}: its lease may be taken over")
                    slot.stop_reason = "lost"
                    if slot.run is not None:
                        slot.run.signal(signal.SIGKILL)
