"""The ids of a bulk enqueue count up in blocks, so the id index grows at one place.

Random ids made a bulk enqueue of 1M lines rewrite nearly every page of the id index with every
chunk; these stay as short and as hard to collide as a random id.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from queuectl.core.errors import Conflict
from queuectl.core.models import bulk_job_ids
from queuectl.service.jobs import enqueue_lines
from queuectl.store import open_store

_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{10}")  # Crockford base32, as a random id


def test_bulk_ids_count_up_in_blocks_of_32768_with_a_random_prefix_each() -> None:
    ids = list(itertools.islice(bulk_job_ids(), 3 * 32768 + 5))
    assert len(set(ids)) == len(ids)
    assert all(_ID.fullmatch(job_id) for job_id in ids)
    blocks = [ids[i : i + 32768] for i in range(0, len(ids), 32768)]
    assert [len(block) for block in blocks] == [32768, 32768, 32768, 5]
    for block in blocks:
        assert len({job_id[:7] for job_id in block}) == 1  # one prefix per block
        assert block == sorted(block)  # counting up: each id sorts after the one before
    assert len({block[0][:7] for block in blocks}) == 4  # each block draws a new prefix
    assert next(bulk_job_ids())[:7] != ids[0][:7]  # each bulk enqueue draws its own


def test_enqueue_file_ids_sort_in_file_order_and_a_single_enqueue_stays_random(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        seen: list[str] = []
        enqueue_lines(store, [f"echo {i}\n" for i in range(1000)], {}, ids=seen.append)
        assert len(set(seen)) == 1000 and seen == sorted(seen)
        assert {job.id for job in store.list_jobs(limit=2000)} == set(seen)
        again: list[str] = []
        enqueue_lines(store, ["echo again\n"], {}, ids=again.append)
        assert again[0][:7] != seen[0][:7]  # a new enqueue, a new prefix
    finally:
        store.close()


def test_two_enqueues_that_draw_the_same_block_refuse_the_second_whole(tmp_path: Path, monkeypatch) -> None:
    import queuectl.service.jobs as service_jobs

    def same_block():  # what one chance in 34 billion per pair of blocks looks like
        return (f"sameblk{n:03d}" for n in range(1000))

    monkeypatch.setattr(service_jobs, "bulk_job_ids", same_block)
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        enqueue_lines(store, ["echo a\n", "echo b\n"], {})
        with pytest.raises(
            Conflict,
            match=r"sameblk000.*an id made for this enqueue; running it again draws new ones\); nothing was enqueued",
        ):
            enqueue_lines(store, ["echo c\n", "echo d\n", "echo e\n"], {})
        assert sorted(job.command for job in store.list_jobs()) == ["echo a", "echo b"]
    finally:
        store.close()
