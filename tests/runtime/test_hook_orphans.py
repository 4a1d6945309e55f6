"""A job ending must not kill what a running on-finish hook left in the background (found in
review: a hook's detached child is re-parented to the worker's main thread like a job's orphan).
Run in a child process: sweeping makes its process a subreaper, which pytest must not become."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    from queuectl.runtime import executor, orphans

    assert orphans.adopt_orphans()
    hook_running = threading.Event()
    orphans.spare_orphans_while(hook_running.is_set)  # what the worker does with its housekeeper
    pid_file, result = sys.argv[1], {}

    def hook():
        hook_running.set()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f"( (exec sleep 30 >/dev/null 2>&1) & echo $! > {pid_file} ); sleep 1.5; "
             f"kill -0 $(cat {pid_file}) 2>/dev/null && echo ALIVE || echo KILLED"],
            start_new_session=True, stdout=subprocess.PIPE)
        result["out"] = proc.communicate()[0].decode().strip()
        hook_running.clear()

    thread = threading.Thread(target=hook)
    thread.start()
    time.sleep(0.5)
    run = executor.Run("true", None, dict(os.environ))  # a job ends while the hook runs
    while run.poll() is None:
        time.sleep(0.01)
    run.finish()
    thread.join()
    print(result["out"])
    orphans.sweep_orphans()  # the hook is done: its leftover goes now
    pid = int(open(pid_file).read())
    time.sleep(0.2)
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] if os.path.exists(f"/proc/{pid}") else "gone"
    print(state)
""")


def test_a_job_ending_spares_a_running_hooks_background_child(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "child.pid")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    hook_saw, after = done.stdout.split()
    assert hook_saw == "ALIVE"  # before the fix: KILLED, while the hook still needed it
    assert after in ("gone", "Z", "X")  # and once the hook is done, the leftover is swept
