"""Dependencies visible (issue 15): ``show`` lists parents and dependants with their states,
``list`` marks what a waiting job waits for, ``tree ID`` draws the chain, bounded.

The real CLI as a subprocess on a SQLite file, and real burst workers where jobs run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import Cli, describe, fails, ok, ok_json

from queuectl.core.errors import EXIT_NOT_FOUND, EXIT_OK


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    chain = [
        ("fetch", "echo fetch", []),
        ("build", "echo build", ["--after", "fetch"]),
        ("test", "echo test", ["--after", "build"]),
        ("docs", "echo docs", ["--after", "build", "--after", "fetch"]),
        ("alert", "echo alert", ["--on-failure-of", "build"]),
    ]
    for job_id, command, extra in chain:
        ok(cli("enqueue", command, "--id", job_id, *extra))
    return cli


def test_show_lists_parents_and_dependants_with_their_states(run: Cli) -> None:
    view = ok(run("show", "build"))
    rows = {line.split(None, 1)[0]: line for line in view.splitlines() if line.strip()}
    assert "fetch (pending)" in rows["after"]
    assert all(f"{job} (waiting)" in rows["dependants"] for job in ("test", "docs", "alert"))
    data = ok_json(run("tree", "build", "--json"))  # show --json keeps the job's one shape
    assert data["ancestors"] == [
        {"id": "fetch", "kind": "after", "state": "pending", "command": "echo fetch", "parent_of": "build"}
    ]
    kinds = {row["id"]: (row["kind"], row["state"]) for row in data["job"]["dependants"]}
    assert kinds == {"test": ("after", "waiting"), "docs": ("after", "waiting"), "alert": ("on_failure_of", "waiting")}


def test_list_marks_what_a_waiting_job_waits_for(run: Cli) -> None:
    table = ok(run("list", "--format", "table"))
    lines = {line.split()[0]: line for line in table.splitlines() if line.split()}
    assert "waits for build (+1)" in lines["docs"]
    assert "waits for fetch" in lines["build"]
    assert "waits for" not in lines["fetch"]
    rows = {row["id"]: row for row in ok_json(run("list", "--json"))}
    assert rows["docs"]["waits_for"] == ["build", "fetch"]
    assert "waits_for" not in rows["fetch"]
    header, *body = ok(run("list", "--format", "tsv")).splitlines()  # every id, not the sentence
    assert header.split("\t")[-1] == "waits for"
    cells = {line.split("\t")[0]: line.split("\t") for line in body}
    assert cells["docs"][-1] == "build,fetch" and cells["build"][-1] == "fetch" and cells["fetch"][-1] == ""
    assert all(len(row) == len(header.split("\t")) for row in cells.values())


def test_tree_draws_the_chain_and_follows_the_jobs_as_they_run(run: Cli) -> None:
    drawn = ok(run("tree", "build"))
    lines = drawn.splitlines()
    assert lines[0].startswith("fetch pending") and "(parent of build)" in lines[0]
    assert lines[1].startswith("build waiting")
    assert any(line.startswith("├── test waiting") for line in lines)
    assert any("alert waiting" in line and "(on failure)" in line for line in lines)
    proc = run("worker", "start", "--burst")
    assert proc.returncode == EXIT_OK, describe(proc)
    after = ok_json(run("tree", "fetch", "--json"))
    assert after["ancestors"] == []
    root = after["job"]
    assert (root["id"], root["state"]) == ("fetch", "completed")
    build = next(node for node in root["dependants"] if node["id"] == "build")
    states = {node["id"]: node["state"] for node in build["dependants"]}
    assert states == {"test": "completed", "docs": "completed", "alert": "cancelled"}
    fails(run("tree", "nope"), EXIT_NOT_FOUND, "nope")


def test_ten_thousand_dependants_are_never_printed_line_by_line(run: Cli, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"command": "true", "after": ["test"]}) + "\n" for _ in range(10_000))
    (tmp_path / "many.jsonl").write_text(lines)
    proc = run("enqueue", "--file", "many.jsonl", "--quiet")
    assert proc.returncode == EXIT_OK, describe(proc)
    drawn = ok(run("tree", "test"))
    assert len(drawn.splitlines()) < 30
    assert "… and 9,980 more (queuectl tree test --limit N)" in drawn
    assert len(ok(run("tree", "test", "--limit", "50")).splitlines()) < 60
    shown = ok(run("show", "test"))
    assert "… and 9,980 more (queuectl tree)" in shown
    assert ok_json(run("tree", "test", "--json"))["job"]["more"] == 9_980


def test_a_waiting_job_has_one_shape_in_list_and_show(run: Cli) -> None:
    """QA: ``list --json`` gave a waiting job ``waits_for``, ``show --json`` did not."""
    listed = {row["id"]: row for row in ok_json(run("list", "--json"))}
    shown = ok_json(run("show", "docs", "--json"))
    assert shown["waits_for"] == ["build", "fetch"]
    assert {key: value for key, value in shown.items() if key not in ("output", "history")} == listed["docs"]
    assert "waits_for" not in ok_json(run("show", "fetch", "--json"))
