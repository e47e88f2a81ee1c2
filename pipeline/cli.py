"""What every command line shares: a user's mistake is one line on stderr and exit code 2."""

import atexit
import functools
import gc
import sys
from typing import NoReturn


class InputError(Exception):
    """A user's mistake (bad id, path or value): reported in one line, no traceback."""


def fail(message: object) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


@functools.cache
def skip_final_collection() -> None:
    """Let the process exit without the interpreter's last full garbage collection.

    With MLflow, scikit-learn and matplotlib loaded it takes ~1 s, in the launcher and in
    every sweep worker, and frees nothing the OS would not. ``gc.freeze`` only exempts the
    objects still alive from that collection: every atexit handler (ending runs, flushing
    logs) still runs, and our files are closed where they are written.
    """
    atexit.register(gc.freeze)
