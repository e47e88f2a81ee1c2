"""``python -m pipeline.from_make MODULE [ARG ...]``: how the Makefile runs an entry point.

It runs ``python -m MODULE ARG ... $ARGS``, with ``$ARGS`` split into words as a shell
splits them (``'dataset=glob(*)'`` stays one word) but never run: a ``;``, ``$(...)`` or
backquote in it is text, which the entry point refuses as it would any bad override. The
entry point replaces this process (exec): make's signals and exit code are its own.
"""

import os
import shlex
import sys

from pipeline.processes.errors import fail


def main(argv: list[str]) -> None:
    module, *args = argv
    text = os.environ.get("ARGS", "")
    try:
        words = shlex.split(text)
    except ValueError as error:  # an unclosed quote
        fail(f"ARGS={text} cannot be split into words: {error}")
    os.execv(sys.executable, [sys.executable, "-m", module, *args, *words])


if __name__ == "__main__":
    main(sys.argv[1:])
