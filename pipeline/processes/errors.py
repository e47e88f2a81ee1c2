"""A user's mistake, and how an entry point reports it: one line on stderr and exit code 2."""

import sys
from typing import NoReturn


class InputError(Exception):
    """A user's mistake (bad id, path or value): reported in one line, no traceback."""


def first_line(error: BaseException, empty: str = "") -> str:
    """The first line of ``error``'s message, for a one-line report; ``empty`` if it has none."""
    return (str(error).strip().splitlines() or [empty])[0]


def fail(message: object) -> NoReturn:
    """Print ``error: message`` on stderr and exit 2; for entry points only."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
