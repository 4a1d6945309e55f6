"""Every built-in default and tuning constant, one name each, in one place.

Runtime settings that all workers share (max-retries, backoff, lease, heartbeat, ...) are not
here: they live in the database and their defaults in :data:`queuectl.core.config.CONFIG_KEYS`.
"""

# --- jobs ---------------------------------------------------------------------------------------
DEFAULT_QUEUE = "default"  # the queue of a job that names none
OUTPUT_LIMIT = 64 * 1024  # bytes of output kept per attempt, the tail (config output-limit)
MAX_OUTPUT_LIMIT = 16 * 1024 * 1024  # the most output-limit may keep
MONGO_OUTPUT_BUDGET = 14 * 1024 * 1024  # of a 16 MiB MongoDB job document, what all its outputs may fill
MAX_COMMAND_BYTES = 128 * 1024  # a longer command belongs in a script
MAX_ENV_BYTES = 64 * 1024  # all of a job's environment variables together
MAX_LINE_BYTES = 256 * 1024  # one line of `enqueue --file`: a command, its env and the other fields
MAX_DURATION_S = 10 * 365 * 86400.0  # ten years: a longer delay or timeout is a typo, not a plan
MAX_RUN_AT = 32503680000.0  # 3000-01-01T00:00:00Z: a later --run-at is a typo (and past year 9999, unprintable)

# --- stores -------------------------------------------------------------------------------------
# how long a SQLite write waits for the lock before "locked": well under the lease (30 s by
# default), since no transaction holds the lock for long (a big enqueue commits in chunks)
SQLITE_BUSY_TIMEOUT_S = 10.0
SQLITE_INSERT_BATCH = 1000  # rows per executemany of a bulk insert
PROMOTE_BATCH = 1000  # due jobs a claim moves into the claim indexes at most (the earliest first)
BULK_ONE_TRANSACTION = 50_000  # a bulk enqueue up to this many jobs is one transaction (about 1 s)
BULK_CHUNK = 5_000  # jobs per further transaction of a bigger one (a tenth of a second of lock)
BATCH_ABANDONED_AFTER_S = 120.0  # a bulk enqueue whose stager went quiet this long is deleted
MONGO_CONNECT_TIMEOUT_MS = 5000  # a dead server is reported in seconds, not 30
MONGO_INSERT_BATCH = 1000  # documents per insert_many of a bulk insert

# --- workers and the housekeeper ----------------------------------------------------------------
RETRY_WRITE_S = 0.5  # a worker retries writing kept outcomes this often during an outage
FORGET_WORKERS_AFTER_S = 3600.0  # a dead worker stays visible (red) for an hour, then is forgotten
RESTART_BACKOFF_MAX_S = 30.0  # a supervisor restarts a dead worker within this (its backoff doubles up to it)
# a dead worker's row is asked to stop (worker stop) this long after its death, no longer: only until
# then may its supervisor, waiting to restart it, read the request there (twice the backoff: a slow loop)
DEAD_STOPPABLE_S = 2 * RESTART_BACKOFF_MAX_S
CHORE_CHECK_S = 1.0  # schedules and hooks are looked at this often (or every poll interval, if less)
RETENTION_EVERY_S = 60.0  # a retention pass (one batch) this often, sooner while a backlog remains
FIRST_RETENTION_S = 6.0  # the first retention pass comes this soon after a worker starts
RETENTION_BATCH = 1000  # rows per transaction: a big purge never holds the write lock for long
PURGE_YIELD_S = 0.1  # a purge leaves the lock free this long (or as long as it held it) between batches

# --- the dashboard ------------------------------------------------------------------------------
THROUGHPUT_BUCKET_S = 60.0  # throughput per minute
THROUGHPUT_BUCKETS = 15  # over the last 15 minutes
FAILURES_SHOWN = 5  # recent failures listed
MAX_JOB_LOOKUPS = 64  # store.get calls per refresh for the workers' current jobs, at most
HISTORY_WINDOW_S = 60.0  # counts are compared with the snapshot from about a minute ago

# --- PostgreSQL ----------------------------------------------------------------------------------
PG_CONNECT_TIMEOUT_S = 5  # a dead PostgreSQL server is reported in seconds
PG_STATEMENT_TIMEOUT_MS = 15_000  # no statement runs longer (the bulk paths write in chunks)
PG_LOCK_TIMEOUT_MS = 5_000  # a row lock waited for longer than this is an outage, retried later
PG_IDLE_IN_TRANSACTION_TIMEOUT_MS = 15_000  # a client cut off mid-transaction frees its locks this soon
PG_CLOCK_SAMPLE_S = 10.0  # the server's clock offset is re-read at least this often (a clock step)
PG_LISTEN_RETRY_S = 1.0  # a worker's LISTEN connection, once lost, is reopened this often
