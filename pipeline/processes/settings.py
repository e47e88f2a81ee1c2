"""Process-wide settings for the entry points: the CLIs and a sweep's worker processes.

Library code never calls these: importing the training loop in a notebook or a test must
leave that process's allocator and garbage collector as they were.
"""

import atexit
import ctypes
import functools
import gc
import logging
import os

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64 bits.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MAX_MMAP_THRESHOLD = 32 * 2**20

# MLflow's own settings for its HTTP client, and libpq's for a PostgreSQL store. MLflow's
# defaults (7 retries, backoff factor 2, 120 s a request) retry a tracking server that does
# not answer for ~4 minutes, and a sweep's jobs each again. With these: ~2-4 s when the
# server refuses, ~20 s when it is silent, while a blip of a few seconds is still retried.
# A value set in the environment wins.
SERVER_TIMEOUTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    # libpq's own: a PostgreSQL store that does not answer at all (default 130 s a try)
    "PGCONNECT_TIMEOUT": "5",  # per try: libpq tries with TLS, then without
}


def tune_for_jobs() -> None:
    """Every setting an entry point that trains or tracks wants; harmless to call again."""
    keep_freed_memory()
    skip_final_collection()
    give_up_on_silent_servers()
    quiet_database_errors()


def give_up_on_silent_servers() -> None:
    """MLflow's HTTP retries and timeout, and a database's connect timeout, bounded
    (SERVER_TIMEOUTS), unless the user set them; inherited by a sweep's workers."""
    for name, value in SERVER_TIMEOUTS.items():
        os.environ.setdefault(name, value)


def quiet_database_errors() -> None:
    """Drop MLflow's log of a database error with its traceback (a full disk: a dozen lines
    from every job): MLflow raises the error again, and our one line says it."""
    logging.getLogger("mlflow.store.db.utils").addFilter(drop_database_error)  # once: a set
    for pool in SQLALCHEMY_POOLS:  # SQLAlchemy logs through its pool class's own logger
        logging.getLogger(f"sqlalchemy.pool.impl.{pool}").addFilter(drop_cursor_error_of_a_stop)


def drop_database_error(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("SQLAlchemy database error")


SQLALCHEMY_POOLS = ("QueuePool", "NullPool", "SingletonThreadPool", "StaticPool")


def drop_cursor_error_of_a_stop(record: logging.LogRecord) -> bool:
    """Drop SQLAlchemy's log, with its traceback, of a cursor it could not close because our
    stop (a KeyboardInterrupt raised by the signal handler) interrupted its fetch: the stop is
    reported in its own line."""
    error = record.exc_info[1] if record.exc_info else None
    return not (error is not None and isinstance(error.__context__, KeyboardInterrupt))


@functools.cache
def keep_freed_memory() -> None:
    """Let an epoch's freed arrays stay in the process for the next epoch to reuse (once
    per process: the setting is the allocator's).

    By default glibc hands a large freed array back to the kernel, and the next epoch's
    array of the same size page-faults it in again: ~10% of an epoch at m = 20,000 in
    float64. Raising the mmap and trim thresholds keeps the memory. No-op off glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, 2**30)


@functools.cache
def skip_final_collection() -> None:
    """Let the process exit without the interpreter's last full garbage collection.

    With MLflow, scikit-learn and matplotlib loaded it takes ~1 s, in the launcher and in
    every sweep worker, and frees nothing the OS would not. ``gc.freeze`` only exempts the
    objects still alive from that collection: every atexit handler (ending runs, flushing
    logs) still runs, and our files are closed where they are written.
    """
    atexit.register(gc.freeze)
