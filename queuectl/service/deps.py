"""A job's dependencies, visible: its parents and dependants (``show``), what a waiting job waits
for (``list``), and the whole chain around it (``tree``).

Every read is bounded: a job with 10,000 dependants shows the first :data:`DEPENDANTS_SHOWN`
and a count of the rest ("… and N more"), never 10,000 lines, and a tree stops at
:data:`TREE_NODES` jobs. Counts past what was fetched are reported as "at least".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from queuectl.core.lifecycle import FINISHED
from queuectl.core.lifecycle.rules import parents_of
from queuectl.core.models import WAITING, Job
from queuectl.service.jobs import get_job
from queuectl.store import Store

DEPENDANTS_SHOWN = 20  # per job in show and in each level of a tree
DEPENDANTS_COUNTED = 10_000  # fetched to count "… and N more"; past this: "N+ more"
TREE_NODES = 200  # jobs drawn in one tree at most
ANCESTOR_DEPTH = 50  # levels of parents walked up at most


@dataclass(frozen=True)
class Relative:
    """A parent or a dependant: ``kind`` is ``after`` or ``on_failure_of``; ``state`` None: purged."""

    id: str
    kind: str
    state: str | None
    command: str | None = None
    of: str | None = None  # in a tree's ancestors: the job it is a parent of

    def to_dict(self) -> dict[str, Any]:
        data = {"id": self.id, "kind": self.kind, "state": self.state, "command": self.command}
        if self.of is not None:
            data["parent_of"] = self.of
        return data


@dataclass(frozen=True)
class Dependants:
    shown: list[Relative]
    more: int  # beyond ``shown``
    more_is_floor: bool  # True: at least ``more`` (the count stopped at DEPENDANTS_COUNTED)


def parents(store: Store, job: Job) -> list[Relative]:
    """The jobs ``job`` names (``--after`` and ``--on-failure-of``) with their states now."""
    states = store.job_states(parents_of(job))
    rows = [Relative(parent, "after", states.get(parent)) for parent in job.after]
    if job.on_failure_of:
        rows.append(Relative(job.on_failure_of, "on_failure_of", states.get(job.on_failure_of)))
    return rows


def _kind(child: Job, parent_id: str) -> str:
    return "after" if parent_id in child.after else "on_failure_of"


def dependants(store: Store, job_id: str, shown: int = DEPENDANTS_SHOWN) -> Dependants:
    """The jobs that name ``job_id`` as a parent, oldest first: the first ``shown`` and a count."""
    children = store.waiting_children(job_id, any_state=True, limit=DEPENDANTS_COUNTED + 1)
    rows = [Relative(child.id, _kind(child, job_id), child.state, child.command) for child in children[:shown]]
    counted = min(len(children), DEPENDANTS_COUNTED)
    return Dependants(rows, max(0, counted - shown), len(children) > DEPENDANTS_COUNTED)


def relatives(store: Store, job_id: str) -> tuple[list[Relative], Dependants]:
    """``show``: the job's parents and its dependants (NotFound for an unknown job)."""
    job = get_job(store, job_id)
    return parents(store, job), dependants(store, job_id)


def waits_for(store: Store, jobs: list[Job]) -> dict[str, list[str]]:
    """For each waiting job of a page, the parents it still waits for (one read; none when no job
    waits): ``list``'s ``when`` cell, and ``waits_for`` in every job JSON (service.shapes)."""
    waiting = [job for job in jobs if job.state == WAITING]
    if not waiting:
        return {}
    states = store.job_states(sorted({parent for job in waiting for parent in parents_of(job)}))
    return {
        job.id: [parent for parent in parents_of(job) if states.get(parent) not in (*FINISHED, None)] for job in waiting
    }


def waits_text(parents_left: list[str]) -> str:
    """``waits for abc123 (+2)``."""
    if not parents_left:
        return "waits (settling)"
    more = f" (+{len(parents_left) - 1})" if len(parents_left) > 1 else ""
    return f"waits for {parents_left[0]}{more}"


@dataclass
class Node:
    """One job of a tree, with its dependants below it."""

    id: str
    state: str | None
    command: str | None
    kind: str | None = None  # how it depends on the node above it (None: the root)
    children: list[Node] = field(default_factory=list)
    more: int = 0  # dependants not drawn
    more_is_floor: bool = False
    seen: bool = False  # its dependants are drawn elsewhere in this tree (a job with two parents)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "command": self.command,
            "kind": self.kind,
            "dependants": [child.to_dict() for child in self.children],
            "more": self.more,
            "more_is_at_least": self.more_is_floor,
            "also_elsewhere": self.seen,
        }


@dataclass
class Tree:
    """The chain around a job: its ancestors (nearest first, each with its own parents named),
    and the job itself with its descendants."""

    ancestors: list[Relative]
    root: Node
    truncated: bool  # the node budget ran out: some levels are not drawn

    def to_dict(self) -> dict[str, Any]:
        return {
            "ancestors": [row.to_dict() for row in self.ancestors],
            "job": self.root.to_dict(),
            "truncated": self.truncated,
        }


def tree(store: Store, job_id: str, per_node: int = DEPENDANTS_SHOWN, budget: int = TREE_NODES) -> Tree:
    """The job's ancestors (walked up, at most :data:`ANCESTOR_DEPTH` levels) and descendants
    (breadth first, ``per_node`` dependants of each, ``budget`` jobs in all)."""
    job = get_job(store, job_id)
    ancestors: list[Relative] = []
    seen_up = {job.id}
    level = [job]
    for _ in range(ANCESTOR_DEPTH):
        upper: list[Job] = []
        for current in level:
            for parent in parents(store, current):
                if parent.id in seen_up:
                    continue
                seen_up.add(parent.id)
                found = store.get(parent.id)
                command = found.command if found else None
                ancestors.append(Relative(parent.id, parent.kind, parent.state, command, of=current.id))
                if found is not None:
                    upper.append(found)
        if not upper:
            break
        level = upper
    root = Node(job.id, job.state, job.command)
    drawn = {job.id}
    queue = [root]
    left = budget - 1
    truncated = False
    while queue:
        node = queue.pop(0)
        if left <= 0:
            truncated = True
            break
        rows = dependants(store, node.id, shown=min(per_node, left))
        node.more, node.more_is_floor = rows.more, rows.more_is_floor
        for row in rows.shown:
            child = Node(row.id, row.state, row.command, row.kind, seen=row.id in drawn)
            node.children.append(child)
            left -= 1
            if not child.seen:
                drawn.add(row.id)
                queue.append(child)
    return Tree(ancestors, root, truncated)
