"""On-finish hooks: the command a finished job names, run with the job's outcome in its environment."""

from __future__ import annotations

import os
import signal

from queuectl.core.config import RuntimeConfig
from queuectl.core.models import Job
from queuectl.runtime.executor import job_environment


def run_hook(job: Job, config: RuntimeConfig, base_env: dict[str, str]) -> str | None:
    """Run a finished job's hook with its outcome in the environment; returns an error or None.

    A hook never changes the job's outcome and never raises: its failure is recorded on the job.
    """
    assert job.on_finish is not None
    env = job_environment(base_env, job.env)
    env.update(
        {
            "QUEUECTL_JOB_ID": job.id,
            "QUEUECTL_JOB_STATE": job.state,
            "QUEUECTL_EXIT_CODE": "" if job.exit_code is None else str(job.exit_code),
            "QUEUECTL_JOB_COMMAND": job.command,
        }
    )
    cwd = job.cwd if job.cwd and os.path.isdir(job.cwd) else None
    import subprocess  # lazily: an idle worker runs no hook (with tempfile's random and shutil, 1.8 MB)
    import tempfile

    with tempfile.TemporaryFile() as output:  # a file, not a pipe: a background child can't hold it open
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", job.on_finish],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return f"hook could not start: {exc.strerror}"
        try:
            code = proc.wait(timeout=config.hook_timeout)
            error = None
        except subprocess.TimeoutExpired:
            error = f"hook timed out after {config.hook_timeout:g}s"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the hook's whole process group ends with it
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        if error:
            return error
        if code != 0:
            output.seek(max(0, output.seek(0, os.SEEK_END) - 4096))
            tail = output.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            return f"hook exited with {code}: {tail[0][:200]}"
    return None
