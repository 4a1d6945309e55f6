"""Prometheus metrics of the queue, read fresh from the store at each scrape.

prometheus_client is imported only here, and this module only by ``queuectl metrics``. The
collector reads the same cheap, indexed store methods as the dashboard.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from queuectl.core.errors import QueuectlError
from queuectl.core.models import COMPLETED, DEAD, FAILED, STATES
from queuectl.service import observe
from queuectl.store import Store


class QueueCollector:
    """A custom collector: one consistent read of the store per scrape.

    ``strict``: a store error propagates (``queuectl metrics`` then exits with its code);
    otherwise (``--serve``) the scrape still answers, with ``queuectl_up 0`` and the error on stderr.
    """

    def __init__(self, store: Store, strict: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.strict = strict
        self.clock = clock
        self._lock = threading.Lock()  # scrapes may run concurrently; the store connection is shared

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("queuectl_up", "1 if the queue database could be read for this scrape")
        try:
            with self._lock:
                families = self._read()
        except QueuectlError as exc:
            if self.strict:
                raise
            print(f"queuectl metrics: scrape failed: {exc}", file=sys.stderr, flush=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        reading = observe.metrics_reading(self.store, self.clock())
        counts, totals = reading.counts, reading.totals
        jobs = GaugeMetricFamily("queuectl_jobs", "Jobs in the queue, per state and queue", labels=["state", "queue"])
        for queue in sorted(counts):
            per_state = counts[queue]
            for state in list(STATES) + sorted(set(per_state) - set(STATES)):
                jobs.add_metric([state, queue], per_state.get(state, 0))

        workers_alive = GaugeMetricFamily(
            "queuectl_workers_alive", "Workers that heartbeat within the lease", value=reading.workers_alive
        )
        oldest = GaugeMetricFamily(
            "queuectl_oldest_pending_age_seconds",
            "Seconds the oldest due, unclaimed job (pending or failed, run_at reached, queue not "
            "paused) has waited; 0 if none",
            value=max(0.0, reading.lag or 0.0),
        )
        done = CounterMetricFamily(
            "queuectl_jobs_completed",
            "Jobs completed (those still stored: purging lowers it)",
            value=totals.get(COMPLETED, 0),
        )
        failed = CounterMetricFamily(
            "queuectl_jobs_failed",
            "Jobs whose latest attempt failed: waiting for a retry or dead (those still stored)",
            value=totals.get(FAILED, 0) + totals.get(DEAD, 0),
        )
        duration = SummaryMetricFamily(
            "queuectl_job_duration_seconds",
            "Run time of the completed jobs",
            count_value=reading.completed,
            sum_value=reading.durations,
        )
        return [jobs, workers_alive, oldest, done, failed, duration]


def registry_for(store: Store, strict: bool = True) -> CollectorRegistry:
    """A fresh registry holding only the queue's collector (no process or Python metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(store, strict))  # type: ignore[arg-type]
    return registry


def exposition(store: Store) -> str:
    """The Prometheus text format, read now."""
    return generate_latest(registry_for(store)).decode()


def serve(store: Store, port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` until Ctrl-C or SIGTERM; each scrape reads afresh."""
    import signal

    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=addr, registry=registry_for(store, strict=False))
    except OSError as exc:
        raise QueuectlError(f"cannot listen on {addr}:{port}: {exc.strerror or exc}") from None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    print(f"serving metrics on http://{addr}:{server.server_port}/metrics; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while thread.is_alive():
            thread.join(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
    print("stopped serving metrics", file=sys.stderr, flush=True)
