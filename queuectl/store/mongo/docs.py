"""The mapping between a Job and its MongoDB document, and the fence every write matches."""

from __future__ import annotations

from typing import Any

from queuectl.core.lifecycle import KEY_HOLDING, is_due_at
from queuectl.core.models import PROCESSING, Job, Lease


def fence(lease: Lease) -> dict[str, Any]:
    """The filter every write for a held job carries: a lost lease matches nothing."""
    return {"_id": lease.job_id, "state": PROCESSING, "locked_by": lease.worker_id, "attempts": lease.attempt}


def supports_pipeline_updates(collection: Any) -> bool:
    """Real pymongo collections take update pipelines; mongomock does not."""
    return type(collection).__module__.startswith("pymongo")


def job_doc(job: Job) -> dict[str, Any]:
    """A job as stored: ``_id`` is its id; ``active_key`` and ``ready`` are derived index fields."""
    doc = job.to_dict()
    doc["_id"] = doc.pop("id")
    if job.unique_key is not None and job.state in KEY_HOLDING:
        doc["active_key"] = job.unique_key  # held while active: a unique sparse index enforces it
    doc["ready"] = is_due_at(job.state, job.run_at, job.created_at)  # due already: claimable
    return doc


def doc_job(doc: dict[str, Any]) -> Job:
    """The Job a stored document describes (index-only fields dropped)."""
    data = dict(doc)
    data.pop("active_key", None)
    data.pop("ready", None)
    data["id"] = data.pop("_id")
    return Job.from_dict(data)
