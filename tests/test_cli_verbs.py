"""Everyday use, part 2 (issue 15): cancel/rm/retry by ids and filters, hold/release, restart,
enqueue --file ids and batches, wait --batch/--queue. Each through the real CLI, with real
workers (``worker start``) where jobs run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_cli import CLI, Cli, describe, enqueued, fails, ok, start_cli
from test_cli_everyday import in_terminal

from queuectl.core.errors import (
    EXIT_CONFLICT,
    EXIT_JOB_DEAD,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAIT_TIMEOUT,
)


@pytest.fixture
def run(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def states(run: Cli) -> dict[str, str]:
    return {job["id"]: job["state"] for job in run.stored()}


def burst(run: Cli, *args: str) -> None:
    """A real worker process that runs what is due, then exits."""
    proc = run("worker", "start", "--burst", *args)
    assert proc.returncode == EXIT_OK, describe(proc)


def test_cancel_takes_several_ids_and_names_the_ones_it_could_not(run: Cli) -> None:
    for job_id in ("a", "b", "c"):
        ok(run("enqueue", "sleep 100", "--id", job_id))
    assert ok(run("cancel", "a", "b")) == "cancelled a\ncancelled b\n"
    proc = run("cancel", "a", "nope", "c")
    assert proc.returncode == EXIT_CONFLICT, describe(proc)  # the first error's code
    assert proc.stdout == "cancelled c\n"
    assert proc.stderr.splitlines() == [
        "queuectl: error: job a already finished (cancelled); nothing to cancel",
        "queuectl: error: no job with id 'nope'",
    ]
    assert set(states(run).values()) == {"cancelled"}


def test_cancel_by_queue_and_state_and_all_with_confirmation(run: Cli) -> None:
    run.enqueue_lines(
        '{"id": "b1", "command": "true", "queue": "builds"}',
        '{"id": "b2", "command": "true", "queue": "builds", "delay": "1h"}',
        '{"id": "d1", "command": "true"}',
        '{"id": "d2", "command": "true"}',
    )
    proc = run("cancel", "--queue", "builds")
    assert proc.returncode == EXIT_OK, describe(proc)
    assert sorted(proc.stdout.splitlines()) == ["cancelled b1", "cancelled b2"]
    assert proc.stderr == "queuectl: cancelled 2 job(s)\n"
    fails(run("cancel", "--state", "completed"), EXIT_USAGE, "cannot cancel completed jobs")
    fails(run("cancel"), EXIT_USAGE, "give job ids")
    fails(run("cancel", "d1", "--queue", "default"), EXIT_USAGE, "not both")
    fails(run("cancel", "--all"), EXIT_USAGE, "--yes")  # no terminal: refused, nothing done
    assert states(run)["d1"] == "pending"
    code, shown, stdout = in_terminal(run, "cancel", "--all", answer="n\n", stdout_pipe=True)
    assert code == 1 and "Cancel every job" in shown and stdout == ""
    code, shown, stdout = in_terminal(run, "cancel", "--all", answer="y\n", stdout_pipe=True)
    assert code == EXIT_OK and sorted(stdout.splitlines()) == ["cancelled d1", "cancelled d2"], shown
    ok(run("enqueue", "true", "--id", "d3"))
    proc = run("cancel", "--all", "--yes")
    assert (proc.returncode, proc.stdout, proc.stderr) == (EXIT_OK, "cancelled d3\n", "queuectl: cancelled 1 job(s)\n")
    assert states(run)["d3"] == "cancelled"


def test_rm_deletes_jobs_not_running_and_refuses_a_running_one(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "true", "--id", "parent", "--delay", "1h"))
    ok(run("enqueue", "true", "--id", "child", "--after", "parent"))
    ok(run("enqueue", "sleep 30", "--id", "busy", "--queue", "slow"))
    assert ok(run("rm", "parent")) == "removed parent\n"
    assert states(run)["child"] == "cancelled"  # its parent can never complete now
    worker = start_cli("worker", "start", "--queue", "slow", env=run.env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while states(run)["busy"] != "processing" and time.monotonic() < deadline:
            time.sleep(0.1)
        fails(run("rm", "busy"), EXIT_CONFLICT, "running", "cancel it first")
        ok(run("cancel", "busy"))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    proc = run("rm", "--state", "cancelled")
    assert sorted(proc.stdout.splitlines()) == ["removed busy", "removed child"], describe(proc)
    assert run.stored() == []
    fails(run("rm", "busy"), EXIT_NOT_FOUND, "no job")


def test_retry_puts_several_dead_jobs_back_and_a_worker_runs_them(run: Cli) -> None:
    run.enqueue_dead("x1", "x2", "x3")
    assert ok(run("retry", "x1", "x2")) == "retried x1\nretried x2\n"
    assert states(run) == {"x1": "pending", "x2": "pending", "x3": "dead"}
    fails(run("retry", "x1"), EXIT_CONFLICT, "not in the dead letter queue")
    proc = run("retry", "--state", "dead")
    assert proc.stdout == "retried x3\n" and proc.stderr == "queuectl: retried 1 job(s)\n"


def test_enqueue_file_prints_ids_and_wait_batch_waits_for_all_of_them(run: Cli, tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_text('echo one\n{"id": "named", "command": "echo two"}\n')
    proc = run("enqueue", "--file", "jobs.txt")
    ids = enqueued(proc, 2)
    assert ids[1] == "named"
    batch = proc.stderr.split("as batch ")[1].split(";")[0]
    listed = ok(run("list", "--batch", batch, "--format", "tsv"))
    assert sorted(line.split("\t")[0] for line in listed.splitlines()[1:]) == sorted(ids)
    quiet = run("enqueue", "--file", "jobs.txt", "--quiet")
    assert quiet.returncode == EXIT_CONFLICT  # "named" again: all or nothing
    (tmp_path / "more.txt").write_text("exit 3\ntrue\n")
    quiet = run("enqueue", "--file", "more.txt", "--quiet", "--max-retries", "0")
    other = quiet.stdout.strip()
    assert quiet.returncode == EXIT_OK and len(other) == 10, describe(quiet)  # only the batch id
    timed = run("wait", "--batch", batch, "--timeout", "0.3s")
    assert timed.returncode == EXIT_WAIT_TIMEOUT and "still has pending jobs" in timed.stderr
    waiting = start_cli("wait", "--batch", batch, env=run.env, cwd=tmp_path)
    burst(run)
    out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, out) == (EXIT_OK, f"batch {batch}: finished (all completed)\n"), err
    dead = run("wait", "--batch", other)
    assert (dead.returncode, dead.stdout) == (EXIT_JOB_DEAD, f"batch {other}: finished (some dead)\n")
    fails(run("wait", "--batch", "nosuchbatch"), EXIT_NOT_FOUND, "no batch")
    fails(run("wait"), EXIT_USAGE, "give job ids")


def test_wait_queue_returns_once_the_queue_holds_nothing_unfinished(run: Cli, tmp_path: Path) -> None:
    ok(run("enqueue", "sleep 0.5", "--queue", "q1"))
    ok(run("enqueue", "sleep 100", "--queue", "q2"))
    waiting = start_cli("wait", "--queue", "q1", env=run.env, cwd=tmp_path)
    burst(run, "--queue", "q1")
    out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, out) == (EXIT_OK, "queue q1: finished\n"), err
    assert run("wait", "--queue", "q2", "--timeout", "0.2s").returncode == EXIT_WAIT_TIMEOUT
    # a queue that never held a job is a typo (biulds): refused, not "finished" (as queue pause)
    fails(run("wait", "--queue", "q3", "--timeout", "1s"), EXIT_NOT_FOUND, "no queue named 'q3'", "q1, q2")


def test_a_held_job_is_never_claimed_until_released(run: Cli) -> None:
    ok(run("enqueue", "echo ran", "--id", "h"))
    ok(run("enqueue", "true", "--id", "free"))
    assert ok(run("hold", "h")) == "held h\n"
    listed = ok(run("list", "--state", "held", "--format", "tsv"))
    assert [line.split("\t")[:2] for line in listed.splitlines()[1:]] == [["h", "held"]]
    assert json.loads(ok(run("status", "--json")))["states"]["held"] == 1
    burst(run)  # a real worker: runs the free job, leaves the held one alone
    assert states(run) == {"h": "held", "free": "completed"}
    fails(run("hold", "free"), EXIT_CONFLICT, "only a pending, failed or waiting job")
    fails(run("release", "free"), EXIT_CONFLICT, "not held")
    assert ok(run("release", "h")) == "released h\n"
    burst(run)
    assert states(run)["h"] == "completed"


def test_restart_runs_the_same_job_again_and_show_keeps_its_old_run(run: Cli) -> None:
    ok(run("enqueue", "echo first; exit 3", "--id", "old", "--max-retries", "0", "--priority", "2"))
    fails(run("restart", "old"), EXIT_CONFLICT, "only a completed, dead, cancelled job")
    burst(run)  # a real worker: the first run ends dead
    assert (run.stored_job("old")["state"], run.stored_job("old")["exit_code"]) == ("dead", 3)
    assert ok(run("restart", "old", "--command", "echo second")) == "restarted old\n"
    again = run.stored_job("old")
    assert (again["state"], again["attempts"], again["exit_code"], again["output"]) == ("pending", 0, None, None)
    burst(run)  # and runs again, under the same id
    job = json.loads(ok(run("show", "old", "--json")))
    assert (job["state"], job["command"], job["priority"], job["output"]) == ("completed", "echo second", 2, "second\n")
    runs = [(a["number"], a["ended"], a["exit_code"]) for a in job["history"]]
    assert runs == [(1, "failed", 3), (2, "completed", 0)], job["history"]
    assert "first" in ok(run("logs", "old", "--attempt", "1"))  # the old run's output is kept
    kinds = [json.loads(line)["kind"] for line in ok(run("events", "--job", "old", "--json")).splitlines()]
    assert "restarted" in kinds and kinds.index("restarted") < len(kinds) - 1, kinds
    assert [job["id"] for job in run.stored()] == ["old"]  # no copy was made
    fails(run("restart", "nope"), EXIT_NOT_FOUND, "no job")
    fails(run("restart", "old", "--priority", "9999999"), EXIT_USAGE, "priority")
    fails(run("restart", "old", "--queue", "bad name"), EXIT_USAGE, "invalid queue name")


def test_restart_refuses_while_another_job_holds_its_unique_key(run: Cli) -> None:
    ok(run("enqueue", "true", "--id", "a", "--unique-key", "nightly"))
    ok(run("cancel", "a"))
    ok(run("enqueue", "true", "--id", "b", "--unique-key", "nightly"))
    fails(run("restart", "a"), EXIT_CONFLICT, "unique key 'nightly' is held by another active job")
    assert run.stored_job("a")["state"] == "cancelled"  # nothing half-written


def test_a_held_waiting_job_is_not_stranded_when_its_parent_finishes_meanwhile(run: Cli) -> None:
    ok(run("enqueue", "true", "--id", "parent"))
    ok(run("enqueue", "echo child", "--id", "child", "--after", "parent"))
    assert ok(run("hold", "child")) == "held child\n"
    burst(run)  # the parent completes while its child is held
    assert states(run) == {"parent": "completed", "child": "held"}
    assert ok(run("release", "child")) == "released child\n"  # pending: its parent is done
    burst(run)
    assert run.stored_job("child")["state"] == "completed"
    ok(run("enqueue", "sleep 100", "--id", "slow"))
    ok(run("enqueue", "true", "--id", "next", "--after", "slow"))
    ok(run("hold", "next"))
    assert ok(run("release", "next")) == "released next (waiting)\n"


def test_new_verbs_fail_in_one_line(run: Cli) -> None:
    for args, code in (
        (("hold", "nope"), EXIT_NOT_FOUND),
        (("release", "nope"), EXIT_NOT_FOUND),
        (("rm",), EXIT_USAGE),
        (("retry", "--state", "pending"), EXIT_USAGE),
        (("wait", "--batch", "b", "--queue", "q"), EXIT_USAGE),
    ):
        fails(run(*args), code)


def test_version_short_help_group_examples_and_completion(run: Cli) -> None:
    from importlib.metadata import version

    assert ok(run("--version")) == f"queuectl {version('queuectl')}\n"
    assert ok(run("-h")) == ok(run("--help"))
    for group in ("worker", "dlq", "queue", "config", "schedule"):
        assert "Example: queuectl " in ok(run(group, "-h")), group
    assert "Example: queuectl " in ok(run("--help"))
    for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --command queuectl")):
        assert marker in ok(run("completion", shell)), shell
    fails(run("completion", "tcsh"), EXIT_USAGE, "unknown shell")
    asked = subprocess.run(
        [*CLI],
        env={**run.env, "_QUEUECTL_COMPLETE": "complete_bash", "COMP_WORDS": "queuectl re", "COMP_CWORD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sorted(asked.stdout.split()) == ["release", "restart", "retry"], describe(asked)


def test_labels_on_enqueue_and_schedules_filter_list_and_the_bulk_verbs(run: Cli) -> None:
    ok(run("enqueue", "true", "--id", "w1", "--label", "team=web", "--label", "env=prod"))
    ok(run("enqueue", "true", "--id", "w2", "-l", "team=web"))
    ok(run("enqueue", "true", "--id", "d1", "-l", "team=db"))
    listed = ok(run("list", "--label", "team=web", "--format", "tsv")).splitlines()[1:]
    assert [line.split("\t")[0] for line in listed] == ["w2", "w1"]
    assert json.loads(ok(run("show", "w1", "--json")))["labels"] == {"env": "prod", "team": "web"}
    assert "env=prod team=web" in ok(run("show", "w1"))
    proc = run("cancel", "--label", "team=web", "--label", "env=prod")
    assert proc.stdout == "cancelled w1\n", describe(proc)
    assert states(run) == {"w1": "cancelled", "w2": "pending", "d1": "pending"}
    fails(run("enqueue", "true", "--label", "nokey"), EXIT_USAGE, "KEY=VALUE")
    fails(run("list", "--label", "bad key=x"), EXIT_USAGE, "invalid name")
    # one value per label: a second one is a mistake to say, not a silent overwrite
    fails(run("enqueue", "true", "--label", "a=1", "--label", "a=2"), EXIT_USAGE, "a=1", "a=2")
    ok(run("schedule", "add", "tick", "* * * * * *", "true", "--label", "team=ops"))
    store = run._store()
    try:  # fire it now, as a worker's housekeeper does (a burst worker may stop before the next second)
        from queuectl.service import schedules

        assert schedules.fire_due_schedules(store, time.time() + 2)
    finally:
        store.close()
    fired = ok(run("list", "--label", "team=ops", "--format", "tsv")).splitlines()[1:]
    assert len(fired) == 1 and fired[0].split("\t")[1] == "pending", fired


def test_retry_policy_exit_codes_backoff_and_snooze_with_a_real_worker(run: Cli) -> None:
    ok(run("enqueue", "exit 2", "--id", "usage", "--no-retry-on", "2", "--max-retries", "5"))
    ok(run("enqueue", "exit 75", "--id", "temp", "--retry-on", "75,111", "--max-retries", "1", "--backoff-max", "0"))
    ok(run("enqueue", "exit 1", "--id", "other", "--retry-on", "75", "--max-retries", "3"))
    burst(run)
    usage, temp, other = (run.stored_job(job_id) for job_id in ("usage", "temp", "other"))
    assert (usage["state"], usage["attempts"]) == ("dead", 1) and "not retried" in usage["last_error"]
    assert (temp["state"], temp["attempts"]) == ("dead", 2)  # 75 was retried (at once: a cap of 0)
    assert (other["state"], other["attempts"]) == ("dead", 1)
    assert json.loads(ok(run("show", "temp", "--json")))["retry"] == {"backoff_max": 0.0, "retry_on": [75, 111]}
    ok(run("config", "set", "snooze-exit-code", "99"))
    ok(run("config", "set", "snooze-delay", "1"))
    ok(run("enqueue", "test -f mark && exit 0; touch mark; exit 99", "--id", "snoozy", "--max-retries", "0"))
    burst(run)  # snoozed for 1 s (within a burst's look-ahead), then run again
    snoozy = run.stored_job("snoozy")
    assert (snoozy["state"], snoozy["attempts"]) == ("completed", 1), snoozy  # the snooze did not count
    for args in (
        ("--retry-on", "abc"),
        ("--retry-on", "1", "--no-retry-on", "2"),
        ("--backoff-base", "0.5"),
        ("--backoff-max", "-1"),
        ("--retry-on", "300"),
    ):
        fails(run("enqueue", "true", *args), EXIT_USAGE)
    fails(run("config", "set", "backoff-jitter", "2"), EXIT_USAGE)


def test_a_per_job_snooze_code_overrides_the_config_with_a_real_worker(run: Cli) -> None:
    ok(run("config", "set", "snooze-exit-code", "99"))  # the job's own code wins over this
    script = "test -f mark && exit 0; touch mark; exit 75"
    ok(run("enqueue", script, "--id", "own", "--max-retries", "0", "--snooze-code", "75", "--snooze-delay", "1"))
    ok(run("enqueue", "exit 99", "--id", "config", "--max-retries", "0", "--snooze-code", "75"))
    burst(run)  # snoozed for 1 s (within a burst's look-ahead), then run again
    own = run.stored_job("own")
    assert (own["state"], own["attempts"]) == ("completed", 1), own  # the snooze did not count
    assert json.loads(ok(run("show", "own", "--json")))["retry"] == {"snooze_code": 75, "snooze_delay": 1.0}
    assert run.stored_job("config")["state"] == "dead"  # 99 is no snooze for a job that has its own
    for args in (("--snooze-code", "0"), ("--snooze-code", "256"), ("--snooze-delay", "soon")):
        fails(run("enqueue", "true", *args), EXIT_USAGE)


def test_queue_rate_and_show_through_the_cli(run: Cli) -> None:
    ok(run("enqueue", "true", "--queue", "api"))
    assert ok(run("queue", "rate", "api", "10/m")) == "api: at most 10/m started\n"
    assert ok(run("queue", "limit", "api", "2")) == "api: at most 2 running at once\n"
    assert ok(run("queue", "rate", "idle", "3/h")) == "idle: at most 3/h started\n"  # a queue with no job yet
    shown = json.loads(ok(run("queue", "show", "api", "--json")))
    assert (shown["limit"], shown["rate"], shown["states"]["pending"]) == (2, "10/m", 1)
    assert ok(run("queue", "show", "api")).splitlines()[2:4] == [
        "limit:   at most 2 running at once",
        "rate:    at most 10/m claims started",
    ]
    listed = {row["name"]: row for row in json.loads(ok(run("queue", "list", "--json")))}
    assert (listed["api"]["rate"], listed["idle"]["rate"], "rate" in listed.get("default", {})) == (
        "10/m",
        "3/h",
        False,
    )
    assert ok(run("queue", "rate", "api", "none")) == "api: no rate limit\n"
    assert "rate" not in json.loads(ok(run("queue", "show", "api", "--json")))
    for bad in ("10", "0/s", "5/d", "lots/m", "100001/s"):
        fails(run("queue", "rate", "api", bad), EXIT_USAGE, "queue rate")
    fails(run("queue", "rate", "bad name", "1/s"), EXIT_USAGE, "invalid queue name")
    fails(run("queue", "show", "nope"), EXIT_NOT_FOUND, "no queue named")
