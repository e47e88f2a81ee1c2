"""``python -m pipeline.from_make MODULE [ARG ...]``: how the Makefile runs an entry point.

It runs ``python -m MODULE ARG ... $ARGS``, with ``$ARGS`` split into words as a shell
splits them (``'dataset=glob(*)'`` stays one word) but never run: a ``;``, ``$(...)`` or
backquote in it is text, which the entry point refuses as it would any bad override. The
entry point replaces this process (exec): make's signals and exit code are its own.
"""

import os
import shlex
import sys

from pipeline.processes import entry
from pipeline.processes.errors import InputError


@entry.point()
def main(argv: list[str] | None = None) -> int:
    """Replaces this process with the entry point of ``argv`` and ``$ARGS``; returns only
    on bad input."""
    module, *args = sys.argv[1:] if argv is None else argv
    text = os.environ.get("ARGS", "")
    try:
        words = shlex.split(text)
    except ValueError as error:  # an unclosed quote
        raise InputError(f"ARGS={text} cannot be split into words: {error}") from None
    os.execv(sys.executable, [sys.executable, "-m", module, *args, *words])


if __name__ == "__main__":
    sys.exit(entry.run(main))
