"""Docs that cannot rot: every command of the CLI is shown, with an example, in the README."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from queuectl.cli import app
from queuectl.core.config import CONFIG_KEYS
from queuectl.core.errors import EXIT_JOB_CANCELLED, EXIT_JOB_DEAD, EXIT_WAIT_TIMEOUT

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def command_paths() -> list[str]:
    paths: list[str] = []

    def walk(command: object, prefix: tuple[str, ...]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, (*prefix, name))
        else:
            paths.append(" ".join(prefix))

    walk(typer.main.get_command(app), ())
    return paths


def test_the_cli_has_the_commands_we_document() -> None:
    assert {"enqueue", "worker start", "dlq retry", "schedule add", "dashboard"} <= set(command_paths())


def test_every_command_has_an_example_in_the_readme() -> None:
    missing = [path for path in command_paths() if not re.search(rf"\$ queuectl {re.escape(path)}\b", README)]
    assert not missing, f"commands without an example in README.md: {missing}"


def test_every_config_key_is_documented() -> None:
    missing = [key for key in CONFIG_KEYS if f"`{key}`" not in README]
    assert not missing, f"config keys missing from the README table: {missing}"


def test_wait_exit_codes_are_documented() -> None:
    # in the exit-code table, not just anywhere ("20" also stands in "20,000")
    codes = ", ".join(str(code) for code in (EXIT_JOB_DEAD, EXIT_JOB_CANCELLED, EXIT_WAIT_TIMEOUT))
    assert re.search(rf"^\| {re.escape(codes)} \| `wait`", README, re.MULTILINE), codes


def test_readme_names_the_test_command_that_ci_runs() -> None:
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "python -m pytest" in README and "python -m pytest" in ci


def test_ci_runs_the_checks_of_scripts_check_sh() -> None:
    root = Path(__file__).resolve().parent.parent
    ci = (root / ".ci" / "run").read_text()
    check = (root / "scripts" / "check.sh").read_text()
    assert "scripts/check.sh" in ci
    for step in ("ruff check", "ruff format --check", "mypy queuectl tests", "python -m pytest"):
        assert step in check, step


# --- every example of the README, run ----------------------------------------------------------

# What the README's examples stand for, made runnable on a scratch queue. Each rule is what a
# reader would do in the same place; nothing else about an example is changed.
SKIPPED_EXAMPLES = ("pip install", "export ")  # installing; an export into the test's own shell
SCRIPTS = re.compile(r'"(\./[\w.-]+\.sh|make report|send-digest|curl [^"]*)"')  # example scripts: `true`
REPLACEMENTS = {
    "generate-jobs |": "printf 'true\\ntrue\\n' |",
    "/srv/app": "{scratch}",
    "/tmp/w.log": "{scratch}/w.log",
    "| jq .states": "| python3 -c 'import json, sys; print(json.load(sys.stdin)[\"states\"])'",
    "--serve 9464": "--serve 0",  # any free port
    "queuectl serve": "queuectl serve --port 0",
}
# run until Ctrl-C: stopped after a moment, fine if alive then
LONG_RUNNING = ("--watch", "--serve", "queuectl serve", "--follow")
GENERATED_ID = re.compile(r"\b(?=[0-9a-z]*\d)(?=[0-9a-z]*[a-z])[0-9a-z]{10}\b")


def readme_examples() -> list[tuple[str, list[str]]]:
    """Every ``$ ...`` line of the README's console blocks, in order, with the lines shown after it."""
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", README, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples:
                examples[-1][1].append(line)
    return examples


def runnable(command: str, scratch: Path, last_id: str, dead_id: str) -> str:
    """The example with the README's stand-ins replaced (see the rules above)."""
    if "worker start" in command and "--burst" not in command:
        # a foreground or detached run would go on until stopped: the burst form ends by itself
        command = re.sub(r"(worker start)", r"\1 --burst", command)
    command = SCRIPTS.sub('"true"', command)
    for old, new in REPLACEMENTS.items():
        command = command.replace(old, new.format(scratch=scratch))
    command = command.replace("dlq retry <id>", f"dlq retry {dead_id}")
    return command.replace("<id>", last_id).replace("k3v9q2mx7d", last_id)


def comparable(shown: list[str]) -> bool:
    """Output the README shows that any run prints alike (no generated id, time or count)."""
    text = "\n".join(shown)
    varying = ("would delete", "queuectl dashboard", "added schedule")
    return (
        bool(text)
        and not GENERATED_ID.search(text)
        and not re.search(r"\d{4}-\d\d-\d\dT", text)
        and not any(word in text for word in varying)
    )


def test_every_readme_example_runs(tmp_path: Path) -> None:
    """Each ``$ queuectl ...`` example, run in order on one scratch queue, succeeds (or fails
    exactly as shown, for an example of an error) and prints what the README shows."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    scratch = tmp_path
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "queuectl").exists() or shutil.which("queuectl"), "the queuectl console script"
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUEUECTL_")}
    env.update(
        {
            "QUEUECTL_DB": f"sqlite:///{scratch / 'queue.db'}",
            "XDG_DATA_HOME": str(scratch / "data"),
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "COLUMNS": "120",
        }
    )
    (scratch / "jobs.txt").write_text('true\n{"command": "true", "priority": 3}\n')

    def sh(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, shell=True, env=env, cwd=scratch, capture_output=True, text=True, timeout=timeout
        )

    # a job in the dead letter queue, for the examples that retry one (run by a real worker)
    dead = sh("queuectl enqueue 'exit 1' --id doomed --max-retries 0 --queue doomed")
    assert dead.returncode == 0, dead.stderr
    assert sh("queuectl worker start --burst --queue doomed").returncode == 0
    last_id, failures = "", []
    for example, shown in readme_examples():
        if example.startswith(SKIPPED_EXAMPLES) or "pytest" in example:
            continue
        command = runnable(example, scratch, last_id, "doomed")
        if command.lstrip().startswith("queuectl wait"):
            sh("queuectl worker start --burst")  # a reader waiting has workers running
        if any(flag in command for flag in LONG_RUNNING):
            proc = subprocess.Popen(
                command,
                shell=True,
                env=env,
                cwd=scratch,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # the shell and the queuectl it runs: one group to stop
            )
            time.sleep(1.5)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the README says
            out, err = proc.communicate(timeout=30)
            if proc.returncode not in (0, 130, -2) or "Traceback" in err or "error" in err:
                failures.append(f"{example!r}: exit {proc.returncode}\n{err}")
            continue
        result = sh(command)
        expects_error = bool(shown) and shown[0].startswith("queuectl: error:")
        if expects_error:
            if result.returncode == 0 or result.stderr.splitlines() != shown:
                failures.append(
                    f"{example!r}: expected the error {shown}, got exit {result.returncode}\n{result.stderr}"
                )
            continue
        if result.returncode != 0 or "Traceback" in result.stderr:
            failures.append(f"{example!r} (run as {command!r}): exit {result.returncode}\n{result.stderr}")
            continue
        if "worker start" in command and "--detach" in command:
            match = re.search(r"supervisor pid (\d+)", result.stdout)
            assert match, result.stdout
            deadline = time.monotonic() + 30
            while Path(f"/proc/{match.group(1)}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)  # its burst ends by itself; nothing is left running
        printed = result.stdout.strip().splitlines()
        if "enqueue" in command and printed and GENERATED_ID.fullmatch(printed[-1]):
            last_id = printed[-1]
        if comparable(shown) and result.stdout.splitlines() != shown:
            failures.append(f"{example!r}: printed {result.stdout!r}, the README shows {shown}")
    assert not failures, "\n\n".join(failures)


def test_the_readme_heartbeat_schedule_fires_every_five_seconds() -> None:
    """The 6th cron field is seconds: ``*/5 * * * * *`` would fire every second of every fifth minute."""
    from queuectl.core.cron import next_fire_time

    match = re.search(r'schedule add heartbeat "([^"]+)"', README)
    assert match and "every 5 s" in README[match.end() : match.end() + 120]
    first = next_fire_time(match.group(1), "UTC", 1_800_000_000.0)
    second = next_fire_time(match.group(1), "UTC", first)
    third = next_fire_time(match.group(1), "UTC", second)
    assert (second - first, third - second) == (5.0, 5.0)


def test_urls_with_shell_syntax_are_quoted_in_the_readme() -> None:
    """An unquoted ``&`` in ``export QUEUECTL_DB=...`` would run the export in the background."""
    for line in re.findall(r"^\$ export (\S+=.*)$", README, re.MULTILINE):
        value = line.split("=", 1)[1].split("  #")[0].strip()
        if any(char in value for char in "&?;"):
            assert value[0] in "'\"" and value[-1] == value[0], line
