"""A user's mistake, and how an entry point reports it: one line on stderr and exit code 2."""

import re
import sys
from typing import NoReturn

LINE_LIMIT = 300  # characters of a quoted message in a one-line report
USER_ERROR = 2  # the exit code of a user's mistake


class InputError(Exception):
    """A user's mistake (bad id, path or value): reported in one line, no traceback."""


def first_line(error: BaseException, empty: str = "") -> str:
    """The first line of ``error``'s message, ``shortened``, for a one-line report; ``empty``
    if it has none."""
    return shortened((str(error).strip().splitlines() or [empty])[0])


def shortened(text: str, limit: int = LINE_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters; else its first sentences that fit, or
    its first words that fit and "...": never cut inside a word (a path, a URL)."""
    if len(text) <= limit:
        return text
    sentences = re.split(r"(?<=[.!?])\s+", text)
    kept = fitting(sentences, limit)
    if kept:
        return kept
    return fitting(text.split(), limit - len(" ...")) + " ..."


def fitting(pieces: list[str], limit: int) -> str:
    """The first ``pieces`` joined by spaces while they fit in ``limit`` characters."""
    kept = ""
    for piece in pieces:
        longer = f"{kept} {piece}" if kept else piece
        if len(longer) > limit:
            break
        kept = longer
    return kept


def say(message: object) -> None:
    """Print ``error: message``, the one line of an error, on stderr."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def fail(message: object) -> NoReturn:
    """``say(message)`` and exit 2, where an exception would not reach the entry point's
    wrapper (``pipeline.processes.entry``): inside Hydra's job, which prints any other."""
    say(message)
    sys.exit(USER_ERROR)
