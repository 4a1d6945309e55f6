"""The rules of a job's life, written once for every store and every front end.

What is decided here and nowhere else: which states can be claimed, are finished, hold a unique
key or can be cancelled; what an attempt's end leads to (a retry at ``backoff_base ** n`` capped
by ``backoff_max``, or the dead letter queue); the state a new job with parents starts in; how
the jobs waiting on a finished job are settled (released or cancelled, transitively); when an
on-finish hook falls due; what a DLQ retry resets.

The transitions (:mod:`.transitions`) work through the store's primitives (:class:`~queuectl.store.base.Store`:
a unit of work, insert, claim, a guarded update, get/find, children). On a SQL store a unit is
one transaction, so a transition and all its follow-ups commit together. On MongoDB each
primitive is one single-document atomic update; the follow-ups are idempotent and any worker
repairs what a crash between them left: an outcome's write carries the marks of its follow-ups
(outbox: its hook falls due, its dependants are marked to settle) and :func:`repair` resumes
them; :func:`resettle_waiting` covers children inserted while their parent finished.

The package: :mod:`.rules` (the state table and pure rules), :mod:`.settling` (dependants),
:mod:`.transitions` (the changes of state), :mod:`.batches` (a bulk enqueue in bounded chunks);
everything is used as ``lifecycle.NAME``.

Nothing here imports a store or the CLI: the store is passed in, and every time is the caller's.
"""

from queuectl.core.lifecycle.batches import sweep as sweep_batches
from queuectl.core.lifecycle.handling import hold, release, remove, restart
from queuectl.core.lifecycle.rules import (
    AFTER,
    CANCELLABLE,
    CLAIMABLE,
    FINISHED,
    HOLDABLE,
    HOOK_DONE,
    HOOK_DUE,
    HOOK_FAILED,
    HOOK_FALLS_DUE,
    HOOK_RUNNING,
    KEY_HOLDING,
    ON_FAILURE,
    RESTART_EDITS,
    RESTARTABLE,
    WhenHooked,
    blocked_by,
    ending_changes,
    failure_outcome,
    is_due,
    is_due_at,
    outcome_changes,
    parents_of,
    retried,
    retry_delay,
    shutdown_outcome,
    snooze_code,
    snooze_outcome,
    start_state,
    success_outcome,
)
from queuectl.core.lifecycle.settling import resettle, resettle_waiting, settle, settle_marked
from queuectl.core.lifecycle.transitions import (
    LOCK_WAIT_NOTICED_S,
    cancel,
    claim,
    claim_hook,
    enqueue,
    enqueue_job,
    finish,
    finish_and_claim,
    finish_hook,
    heartbeat,
    recover_expired,
    repair,
    retry_dead,
)

__all__ = [
    "AFTER",
    "CANCELLABLE",
    "CLAIMABLE",
    "FINISHED",
    "HOOK_DONE",
    "HOOK_DUE",
    "HOOK_FAILED",
    "HOOK_FALLS_DUE",
    "HOLDABLE",
    "HOOK_RUNNING",
    "KEY_HOLDING",
    "LOCK_WAIT_NOTICED_S",
    "ON_FAILURE",
    "RESTART_EDITS",
    "RESTARTABLE",
    "WhenHooked",
    "blocked_by",
    "cancel",
    "claim",
    "claim_hook",
    "ending_changes",
    "enqueue",
    "enqueue_job",
    "failure_outcome",
    "finish",
    "finish_and_claim",
    "finish_hook",
    "heartbeat",
    "hold",
    "is_due",
    "is_due_at",
    "outcome_changes",
    "parents_of",
    "recover_expired",
    "release",
    "restart",
    "remove",
    "repair",
    "resettle",
    "resettle_waiting",
    "retry_dead",
    "retried",
    "retry_delay",
    "settle",
    "settle_marked",
    "shutdown_outcome",
    "snooze_code",
    "snooze_outcome",
    "start_state",
    "success_outcome",
    "sweep_batches",
]
