"""A job's past and present: its attempt history, one attempt's output, and its progress.

What ``show``, ``logs --attempt``, ``list``, the dashboard and the web page display, computed
once here so that every front end shows the same percent and ETA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from queuectl.core.errors import NotFound
from queuectl.core.models import PROCESSING, Attempt, Job
from queuectl.service.jobs import get_job
from queuectl.store import Store


def attempts(store: Store, job_id: str) -> list[Attempt]:
    """Every attempt of the job that ended, oldest first; NotFound for an unknown job."""
    get_job(store, job_id)
    return store.attempts(job_id)


def attempt(store: Store, job_id: str, number: int | None) -> Attempt:
    """One attempt (default: the latest that ended); NotFound if the job has no such attempt."""
    history = attempts(store, job_id)
    if not history:
        raise NotFound(f"job {job_id} has no finished attempt yet; queuectl logs {job_id} shows its output so far")
    if number is None:
        return history[-1]
    for row in history:
        if row.number == number:
            return row
    raise NotFound(f"job {job_id} has no attempt {number}: it has attempts 1 to {len(history)}")


def attempt_dict(row: Attempt, with_output: bool = False) -> dict[str, Any]:
    """An attempt as JSON: without its output tail unless asked (``has_output`` says if it kept one)."""
    from queuectl.service.shapes import ATTEMPT_TIMES, rfc3339

    data = row.to_dict()
    for name in ATTEMPT_TIMES:
        data[name] = rfc3339(data.get(name))
    data["has_output"] = row.output is not None
    if not with_output:
        data.pop("output")
    return data


@dataclass(frozen=True)
class Progress:
    """A running job's latest report: ``percent`` when it gave a total, ``eta`` (seconds) from
    its rate so far."""

    done: float
    total: float | None
    message: str | None
    at: float
    percent: float | None
    eta: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "message": self.message,
            "eta_s": self.eta,
            "at": _rfc3339(self.at),
            "text": self.text,  # as list and show print it, for a page that shows it as is
        }

    @property
    def text(self) -> str:
        """``40% resizing (ETA 1m20s)``: what ``list``, ``show``, the dashboard and the web page show."""
        from queuectl.core.durations import format_duration

        parts = [f"{self.percent:.0f}%" if self.percent is not None else f"{self.done:g}"]
        if self.message:
            parts.append(self.message)
        if self.eta is not None:
            parts.append(f"(ETA {format_duration(self.eta)})")
        return " ".join(parts)


def progress_of(job: Job) -> Progress | None:
    """The job's progress, if it reported any during its current (or last) attempt."""
    if job.progress_done is None or job.progress_at is None:
        return None
    done, total = job.progress_done, job.progress_total
    percent = eta = None
    if total:
        percent = max(0.0, min(100.0, 100.0 * done / total))
        started = job.started_at
        if job.state == PROCESSING and started is not None and done > 0 and job.progress_at > started:
            rate = done / (job.progress_at - started)
            eta = max(0.0, (total - done) / rate)
    return Progress(done, total, job.progress_message, job.progress_at, percent, eta)


def progress_text(job: Job) -> str:
    """``40% resizing (ETA 1m20s)``, or ``-``."""
    progress = progress_of(job)
    return "-" if progress is None else progress.text


def _rfc3339(epoch: float | None) -> str | None:
    from queuectl.service.shapes import rfc3339

    return rfc3339(epoch)
