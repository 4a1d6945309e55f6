"""One exception family; each class carries the process exit code the CLI uses for it.

Exit codes are part of the interface (scripts branch on them), so they are named here once
and documented in the README.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_UNAVAILABLE = 5
EXIT_READ_ONLY = 6
EXIT_CORRUPT = 7  # worker processes and `worker start`: the database is damaged, nothing was restarted
# queuectl wait: how the awaited job ended, when not completed
EXIT_JOB_DEAD = 20
EXIT_JOB_CANCELLED = 21
EXIT_WAIT_TIMEOUT = 22


class QueuectlError(Exception):
    """Base of every error queuectl raises on purpose; the message is shown to the user as is."""

    exit_code = EXIT_ERROR


class InvalidInput(QueuectlError):
    """The user gave a value queuectl cannot accept (bad JSON, empty command, bad duration...)."""

    exit_code = EXIT_USAGE


class NotFound(QueuectlError):
    """The job, worker or queue named does not exist."""

    exit_code = EXIT_NOT_FOUND


class Conflict(QueuectlError):
    """The request clashes with the current state: a duplicate id, a job that is not in the DLQ..."""

    exit_code = EXIT_CONFLICT


class StoreUnavailable(QueuectlError):
    """The database cannot be reached or opened (server down, file locked past the busy timeout)."""

    exit_code = EXIT_UNAVAILABLE


class StoreCorrupt(QueuectlError):
    """The database is damaged (not an outage): retrying cannot help, so nothing retries it.

    A command exits with the unavailable code, as for any database it cannot use; a worker
    process exits with :data:`EXIT_CORRUPT`, which tells its supervisor not to restart it.
    Not a :class:`StoreUnavailable`: a worker waits out an outage, but never a damaged file.
    """

    exit_code = EXIT_UNAVAILABLE


class StoreReadOnly(QueuectlError):
    """The database refuses writes (read-only file, full disk); reads may still work."""

    exit_code = EXIT_READ_ONLY


class DuplicateJobId(Conflict):
    """A store refused a job because its id exists; the message is written here, once."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists")
        self.job_id = job_id


class UniqueKeyTaken(Conflict):
    """A store refused a write because another active job holds the same unique key.

    ``holder`` is ``(job id, state)`` of that job when the store could tell.
    """

    def __init__(self, key: str | None, holder: tuple[str, str] | None = None) -> None:
        held = f"job {holder[0]} ({holder[1]})" if holder else "another active job"
        super().__init__(f"unique key {key!r} is taken by {held}; enqueue again once it has finished")
        self.key = key
        self.holder = holder
