"""The mapping between a Job and its MongoDB document, and the fence every write matches.

Besides the job's own fields a document carries index fields kept in step by every write:
``ready`` (only on a claimable job: true once its time has come; absent otherwise, so the
claim indexes hold claimable jobs only), ``active_key`` (only while the job holds its unique
key), ``settle_at`` (the outbox mark: a finished job whose dependants may still need settling)
and ``_w`` (the token of the latest write, see :mod:`.writes`).
"""

from __future__ import annotations

from typing import Any

from queuectl.core.lifecycle import CLAIMABLE, KEY_HOLDING, events, is_due_at
from queuectl.core.models import PROCESSING, Job, Lease
from queuectl.store.mongo.events import outbox_entry

INDEX_FIELDS = (
    "active_key",
    "ready",
    "settle_at",
    "_w",
    "staging_batch",
    "final_state",
    "outbox",
    "outbox_at",
    "label_keys",
    "cdirty",
    "cs",
    "cv",
)
NOT_READ = {"history": 0, "outputs": 0, "outbox": 0}  # a projection: what reading a job leaves out


def fence(lease: Lease) -> dict[str, Any]:
    """The filter every write for a held job carries: a lost lease matches nothing."""
    return {"_id": lease.job_id, "state": PROCESSING, "locked_by": lease.worker_id, "attempts": lease.attempt}


def job_doc(job: Job) -> dict[str, Any]:
    """A job as stored: ``_id`` is its id, plus the derived index fields."""
    doc = job.to_dict()
    doc["_id"] = doc.pop("id")
    if job.unique_key is not None and job.state in KEY_HOLDING:
        doc["active_key"] = job.unique_key  # held while active: a unique sparse index enforces it
    if job.labels:
        doc["label_keys"] = [f"{key}={value}" for key, value in job.labels.items()]  # what filters match
    if job.state in CLAIMABLE:
        doc["ready"] = is_due_at(job.state, job.run_at, job.created_at)  # due already: claimable
    doc["outbox"] = [outbox_entry(events.enqueued(job))]  # published once the job is visible
    doc["outbox_at"] = job.created_at
    doc["cdirty"] = "new"  # not counted yet (see mongo.counts); a staged one is published with a new mark
    return doc


def doc_job(doc: dict[str, Any]) -> Job:
    """The Job a stored document describes (index-only fields dropped)."""
    data = {name: value for name, value in doc.items() if name not in INDEX_FIELDS and name not in NOT_READ}
    data["id"] = data.pop("_id")
    return Job.from_dict(data)
