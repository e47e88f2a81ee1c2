"""The one wrapper of every command line: its errors end in one line and an exit code, and
its process gets the entry points' settings.

    @entry.point(config.error_line)  # the errors it explains besides ours, if any
    def main(argv: list[str] | None = None) -> int: ...

    if __name__ == "__main__":
        sys.exit(entry.run(main))

A test calls ``main(argv)`` in the test's process; ``run`` adds what only the command
line's process may do (``settings.tune_for_jobs``).
"""

import functools
from collections.abc import Callable

from pipeline.processes import settings, stopping
from pipeline.processes.errors import USER_ERROR, InputError, say

Main = Callable[[list[str] | None], int]
# An error's one line if it is a user's mistake a higher layer knows (a config, the store);
# None for any other error, which keeps its traceback.
Explain = Callable[[BaseException], str | None]


def point(*explainers: Explain) -> Callable[[Main], Main]:
    """Decorator: ``main(argv)`` returning its exit code, where a user's mistake (InputError,
    or an error one of ``explainers`` explains) is one line ``error: ...`` on stderr and exit
    2, and a stop before ``main`` handles it (Ctrl-C, SIGTERM) is exit 130 or 143, whatever
    error it caused on its way out."""

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def one_line_errors(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt as stop:
                return stopping.exit_code(stop)
            except Exception as error:
                stop = stopping.received()
                if stop is not None:  # the stop's aftermath: a library's cleanup failed under it
                    return stopping.exit_code(stop)
                line = one_line(error, explainers)
                if line is None:
                    raise
                say(line)
                return USER_ERROR
            finally:
                stopping.forget_unhandled_interrupt()  # the exit code is ours, whatever it is

        return one_line_errors

    return wrap


def one_line(error: Exception, explainers: tuple[Explain, ...]) -> str | None:
    """``error``'s one line if it is a user's mistake, else None."""
    if isinstance(error, InputError):
        return str(error)
    return next(filter(None, (explain(error) for explain in explainers)), None)


def run(main: Callable[[], int]) -> int:
    """``main``'s exit code, run on the command line (sys.argv) with the entry points'
    process settings."""
    settings.tune_for_jobs()
    return main()
