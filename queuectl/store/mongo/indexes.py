"""The jobs collection's indexes, as partial filters that index only the documents a query needs.

Opening a store compares what the server has with :data:`JOB_INDEXES`: a missing index is
built, an index of ours whose keys or options changed is rebuilt under its new name *before*
the old one is dropped (so no query ever runs without one, and no two definitions share a name:
the name carries a version), and the indexes older versions built (:data:`LEGACY_NAMES`) are
dropped; an index someone else built under a name of ours with other keys is replaced.
Nothing is written when everything matches, so a read-only user can open the store; one that
may not build a missing index gets a one-line warning instead of a refused command.
"""

from __future__ import annotations

import sys
from typing import Any

from queuectl.core.models import PROCESSING, WAITING

# name -> (keys, options). Change a definition: change its version suffix too.
JOB_INDEXES: dict[str, tuple[list[tuple[str, int]], dict[str, Any]]] = {
    # claims walk only due jobs: ``ready`` is true only on a claimable job whose time has come
    "claim_queue_v2": (
        [("queue", 1), ("priority", -1), ("created_at", 1)],
        {"partialFilterExpression": {"ready": True}},
    ),
    "claim_any_v2": ([("priority", -1), ("created_at", 1)], {"partialFilterExpression": {"ready": True}}),
    # claimable jobs whose time has not come yet (delayed, retries waiting out their backoff)
    "not_due_v2": ([("run_at", 1)], {"partialFilterExpression": {"ready": False}}),
    "due": ([("state", 1), ("run_at", 1)], {}),
    "lease": ([("state", 1), ("lease_expires_at", 1)], {}),
    "held_v2": ([("locked_by", 1)], {"partialFilterExpression": {"state": PROCESSING}}),
    "by_state": ([("state", 1), ("created_at", -1)], {}),
    "by_queue": ([("queue", 1), ("created_at", -1)], {}),
    "by_created": ([("created_at", -1)], {}),
    "finished": ([("state", 1), ("finished_at", 1)], {}),
    "updated": ([("state", 1), ("updated_at", -1)], {}),
    # fields that exist only while they matter (staged, holding a key, marked): sparse is exact
    "staging_batch_v3": ([("staging_batch", 1), ("final_state", 1)], {"sparse": True}),
    "job_batch_v1": ([("batch", 1), ("state", 1)], {"sparse": True}),  # an enqueue --file's jobs
    "labels_v1": ([("label_keys", 1), ("created_at", -1)], {"sparse": True}),  # --label k=v filters
    "unique_active": ([("active_key", 1)], {"unique": True, "sparse": True}),
    "after_v2": ([("after", 1)], {"partialFilterExpression": {"state": WAITING}}),
    "on_failure_of_v2": ([("on_failure_of", 1)], {"partialFilterExpression": {"state": WAITING}}),
    # show and tree: a job's dependants in every state (only jobs that name a parent are indexed)
    "dependants_v1": ([("after", 1)], {"partialFilterExpression": {"after": {"$type": "string"}}}),
    "failure_dependants_v1": (
        [("on_failure_of", 1)],
        {"partialFilterExpression": {"on_failure_of": {"$type": "string"}}},
    ),
    "hooks_v2": ([("hook_state", 1), ("updated_at", 1)], {"partialFilterExpression": {"hook_state": "due"}}),
    "settle_v2": ([("settle_at", 1)], {"sparse": True}),
    "outbox_v1": ([("outbox_at", 1)], {"sparse": True}),  # jobs with events not yet published
    "counting_v1": ([("cdirty", 1)], {"sparse": True}),  # jobs the counters have not caught up with
}

# the names this code used before issue 12: dropped once their replacements exist (an index an
# operator added by hand under another name is left alone)
# (and counts_v2, durations_v2: the aggregates read by counts() before the counters of issue 18)
LEGACY_NAMES = {
    "claim_queue",
    "claim_any",
    "not_due",
    "batch",
    "batch_v2",
    "after",
    "on_failure_of",
    "hooks",
    "counts_v2",
    "durations_v2",
}

OTHER_INDEXES: dict[str, dict[str, tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    "schedules": {"due": ([("paused", 1), ("next_fire_at", 1)], {})},
    "batches": {"by_state": ([("state", 1), ("touched_at", 1)], {})},
    # the event log: _id is the sequence number; job_id and queue exist only where they apply
    "events": {
        "eid_v1": ([("eid", 1)], {"unique": True}),
        "job_v1": ([("job_id", 1), ("_id", 1)], {"sparse": True}),
        "queue_v1": ([("queue", 1), ("_id", 1)], {"sparse": True}),
        "at_v1": ([("at", 1)], {}),
    },
}

_COMPARED = ("unique", "sparse", "partialFilterExpression")


def _matches(have: dict[str, Any], keys: list[tuple[str, int]], options: dict[str, Any]) -> bool:
    if [(name, int(order)) for name, order in have.get("key", [])] != keys:
        return False
    return all(bool(have.get(o)) == bool(options.get(o)) and have.get(o) == options.get(o) for o in _COMPARED)


def ensure_indexes(collection: Any, wanted: dict[str, tuple[list[tuple[str, int]], dict[str, Any]]]) -> None:
    """Make ``collection``'s indexes exactly ``wanted`` (plus ``_id_``), safely (see the module)."""
    import pymongo.errors as perr

    have = collection.index_information()
    stale = [name for name in have if name in LEGACY_NAMES and name not in wanted]
    for name, (keys, options) in wanted.items():
        if name in have and _matches(have[name], keys, options):
            continue
        if name in have:  # same name, other definition (a hand-made index): replace it
            collection.drop_index(name)
        try:
            collection.create_index(keys, name=name, **options)
        except perr.OperationFailure as exc:
            if exc.code == 13:  # Unauthorized: a read-only user; the queries still work, slower
                print(f"queuectl: warning: cannot build MongoDB index {name} (not authorized)", file=sys.stderr)
                return
            if exc.code in (85, 86):  # an old index with the same keys under another name
                for old in [n for n in stale if [tuple(k) for k in have[n]["key"]] == keys]:
                    collection.drop_index(old)
                    stale.remove(old)
                collection.create_index(keys, name=name, **options)
            else:
                raise
    for name in stale:  # only once every new one exists
        collection.drop_index(name)
