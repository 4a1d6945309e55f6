"""How a live follow (``logs --follow``, HTTP ``logs?follow=1``) starts and stops on a running
job's spool: ``tail`` counts from the end of what the job wrote so far, however much that is,
and a follow that ends early (its client went away, its job was deleted, a store error) closes
the spool files it held. ``serve`` runs follows for as long as it lives: a leaked descriptor per
stream adds up there, and keeps an unlinked spool generation's disk space taken."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from queuectl.core import lifecycle
from queuectl.core.errors import StoreUnavailable
from queuectl.core.models import Job
from queuectl.service.jobs import enqueue
from queuectl.service.livetail import opener
from queuectl.service.logtail import follow
from queuectl.store.spool import SpoolWriter, open_spool_dir, spool_dir_for
from queuectl.store.sql.sqlite import SqliteStore

LINES = 400_000  # 2.8 MB: more than one read of a spool (1 MiB), less than a generation (8 MiB)


class Stop(Exception):
    """The follow's client went away."""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[SqliteStore, Job, str]]:
    """A running job that has written LINES numbered lines to its spool, which is still open."""
    store = SqliteStore(str(tmp_path / "q.db"))
    (job_id,) = enqueue(store, [{"command": "seq 400000; sleep 60"}])
    (job,) = lifecycle.claim(store, "w1", None, store.now(), 60.0, 1)
    assert job.id == job_id
    folder = spool_dir_for(store.url)
    dir_fd = open_spool_dir(folder, create=True)
    assert dir_fd is not None
    writer = SpoolWriter(dir_fd, job.id, job.attempts)
    writer.write("".join(f"{n:06d}\n" for n in range(1, LINES + 1)).encode())
    try:
        yield store, job, folder
    finally:
        writer.close()
        os.close(dir_fd)
        store.close()


def spool_descriptors(folder: str) -> int:
    """This process's open descriptors on the spool folder or a file in it (unlinked ones too)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target == folder or target.startswith(folder + "/")
    return count


def stop_at_first_wait(seconds: float) -> None:
    raise Stop


def test_tail_of_a_live_follow_is_the_last_lines_of_all_the_job_wrote(running: tuple[SqliteStore, Job, str]) -> None:
    store, job, _ = running
    out: list[str] = []
    with pytest.raises(Stop):
        follow(
            lambda: store.get(job.id), out.append, lambda _: None, sleep=stop_at_first_wait, live=opener(store), tail=3
        )
    assert "".join(out) == f"{LINES - 2:06d}\n{LINES - 1:06d}\n{LINES:06d}\n"


def test_a_follow_that_ends_early_closes_the_spool_it_held(running: tuple[SqliteStore, Job, str]) -> None:
    store, job, folder = running
    before = spool_descriptors(folder)  # the writer's own (its folder and its file)

    def deleted_later() -> Job | None:
        reads.append(1)
        return store.get(job.id) if len(reads) == 1 else None

    def outage() -> Job | None:
        reads.append(1)
        if len(reads) == 1:
            return store.get(job.id)
        raise StoreUnavailable("the store went away")

    out: list[str] = []
    # the client goes away at the first wait
    with pytest.raises(Stop):
        follow(lambda: store.get(job.id), out.append, lambda _: None, sleep=stop_at_first_wait, live=opener(store))
    assert spool_descriptors(folder) == before
    # the job is deleted while followed (follow returns None)
    reads: list[int] = []
    assert (
        follow(deleted_later, out.append, lambda _: None, interval=0, sleep=lambda _: None, live=opener(store)) is None
    )
    assert spool_descriptors(folder) == before
    # the store fails, and the caller does not ride it out
    reads = []
    with pytest.raises(StoreUnavailable):
        follow(outage, out.append, lambda _: None, interval=0, sleep=lambda _: None, live=opener(store))
    assert spool_descriptors(folder) == before


def test_a_silent_running_job_s_spool_is_looked_for_a_few_times_a_second(tmp_path: Path) -> None:
    """Until a running job writes, its spool does not exist, and each look is an open, a listing
    and a close of the spool folder: 20 a second per follow made 200 follows of quiet jobs cost
    serve a whole core. A few a second show the first line soon enough."""
    store = SqliteStore(str(tmp_path / "q.db"))
    enqueue(store, [{"command": "sleep 60"}])
    (job,) = lifecycle.claim(store, "w1", None, store.now(), 60.0, 1)
    looks: list[int] = []
    slept: list[float] = []

    def live(_: Job) -> None:
        looks.append(1)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if sum(slept) >= 2.0:
            raise Stop

    with pytest.raises(Stop):
        follow(lambda: store.get(job.id), lambda _: None, lambda _: None, sleep=sleep, live=live)
    assert 4 <= len(looks) <= 2.0 / 0.25 + 1  # 2 s followed
    store.close()
