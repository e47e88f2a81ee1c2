"""How a sweep's processes stop.

SIGINT and SIGTERM end a worker's job once, as Ctrl-C does (``catch_stops``), and end the
launcher's sweep after its jobs in flight have ended their runs (``run_to_end``). A worker
whose launcher is killed with -9 ends the sweep's runs still RUNNING and exits
(``watch_launcher``). Grid sweeps (pipeline.train) and searches (pipeline.search) share them,
and pass in what is theirs (how to wait for their jobs, how to abandon their runs).

Like pipeline.processes.settings, for the entry points and their workers only: these install signal
handlers and exit the process.
"""

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from pipeline.processes import workers
from pipeline.processes.errors import InputError


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, timeout, docker stop, kill), handled as Ctrl-C is."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interruption(signum: int) -> KeyboardInterrupt:
    return Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


def exit_code(stop: KeyboardInterrupt) -> int:
    """The exit code of a process a stop ended: 130 for SIGINT (Ctrl-C), 143 for SIGTERM."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def handle_stop_signals(handler) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def stop_once(signum: int, frame) -> None:
    """The first SIGINT or SIGTERM ends the job as Ctrl-C does; those after it are ignored,
    so that the job's points and status reach the store whole, and the process starts no
    other job (a pool may hand it one before the launcher stops)."""
    handle_stop_signals(signal.SIG_IGN)
    workers.state.stopped_by = signum
    raise interruption(signum)


def catch_stops() -> None:
    """SIGINT and SIGTERM end this process's job once (``stop_once``)."""
    handle_stop_signals(stop_once)
    sys.unraisablehook = quiet_swallowed_stop


def quiet_swallowed_stop(unraisable) -> None:
    """Python's hook for an exception it cannot raise (in a garbage collector's callback):
    the stop's KeyboardInterrupt, which ``raise_if_stopped`` raises again, is no error."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def forget_unhandled_interrupt() -> None:
    """CPython (3.11) marks a KeyboardInterrupt that escapes code run by ``exec`` of a string
    (dataclasses makes its methods so) as unhandled, though a caller handled it, and may then
    end the process by SIGINT, with no line, not by its exit code (seen: a search stopped as
    it checks its corners); an ``exec`` of a string that succeeds clears the mark."""
    exec("pass")


def received() -> KeyboardInterrupt | None:
    """The stop this process has received (``stop_once``), if any, as the exception it raised."""
    signum = workers.state.stopped_by
    return interruption(signum) if signum else None


def raise_if_stopped(point) -> None:
    """A training listener: a stop whose KeyboardInterrupt Python swallowed (raised inside a
    garbage collector's callback, where exceptions are ignored) ends the job at its next
    logged point."""
    stop = received()
    if stop is not None:
        raise stop


def watch_launcher(launcher_pid: int, abandon: Callable[[str, str | None], None]) -> None:
    """In a worker process the launcher started itself (joblib's): once the launcher is gone
    (killed with -9), ``abandon(why, run_id)`` with the run of this worker's job in flight, if
    any (``parent_run.abandon``: it ends KILLED, saying why, and so does the parent),
    then the launcher's shared memory is released and the process exits.

    The watcher learns of the death at once (a pidfd), then takes the job's guard for good
    (``workers.state.guard``): a job writing its final results and status ends first, and
    none starts after. Once per process. Workers on other machines (Slurm, Ray) have another
    parent process and are left alone.
    """
    state = workers.state
    if os.getppid() != launcher_pid or state.watching:
        return
    state.watching = True

    def watch() -> None:
        workers.wait_for_exit(launcher_pid)
        state.launcher_died = True  # main() starts no new job from now on
        state.guard.lock.acquire()  # never released: the process exits holding it
        try:
            abandon(f"the sweep's launcher (pid {launcher_pid}) died", state.guard.run_id)
            workers.release_launcher_resources(launcher_pid)
        finally:
            os._exit(1)  # the job in flight goes with it: a resume runs it again

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


@contextlib.contextmanager
def on_stop(action: Callable[[], None]) -> Iterator[None]:
    """While in the block, a stop of the sweep (``run_to_end``) calls ``action()`` before it
    waits for the jobs in flight: a launcher whose jobs run beyond its children (Slurm's)
    cancels them there, so that they end their runs within the wait."""
    workers.state.stop_actions.append(action)
    try:
        yield
    finally:
        workers.state.stop_actions.remove(action)


def run_to_end(
    body: Callable[[], object],
    end: Callable[[str, float], None],
    wait_for_jobs: Callable[[], None],
    failure_line: Callable[[Exception], str],
) -> int:
    """``body()``, then ``end(status, seconds)`` whatever happened: FINISHED (exit 0), KILLED
    on Ctrl-C (130) or SIGTERM (143), FAILED on any error (1, and ``failure_line(error)`` on
    stderr, after the end: a full disk's line says how the parent was left; an InputError
    from ``end`` is such a line too). On a stop, ``wait_for_jobs()`` first lets the jobs in
    flight end their runs."""
    status, code, started = "FAILED", 1, time.perf_counter()
    stopped_by: list[int] = []  # Ray's get turns our Terminated into a KeyboardInterrupt
    failure: Exception | None = None

    def stop_sweep(signum: int, frame) -> None:
        """Let the jobs in flight end their runs, their points sent, before joblib kills
        its workers: ``kill <launcher>`` reaches no worker, a terminal's Ctrl-C all."""
        handle_stop_signals(signal.SIG_IGN)
        stopped_by.append(signum)
        workers.interrupt_children()
        for action in list(workers.state.stop_actions):
            with contextlib.suppress(Exception):  # the jobs are waited for whatever happens
                action()
        with contextlib.suppress(Exception):  # a store that fails now: finish() says so
            wait_for_jobs()
        raise interruption(signum)

    handle_stop_signals(stop_sweep)
    try:
        body()
        status, code = "FINISHED", 0
    except KeyboardInterrupt as stop:
        # Ray's get turns our Terminated into a KeyboardInterrupt: the signal says which
        by_sigterm = signal.SIGTERM in stopped_by
        status, code = "KILLED", exit_code(interruption(signal.SIGTERM) if by_sigterm else stop)
    except Exception as error:  # any failure of the launcher ends the sweep, in one line
        failure = error
    finally:
        handle_stop_signals(signal.SIG_IGN)  # the parent's record is written whole
        try:
            end(status, time.perf_counter() - started)
        except InputError as unrecorded:  # the end could not be recorded whole (a full disk)
            failure, code = unrecorded, code or 1
    if failure is not None:
        print(f"error: {failure_line(failure)}", file=sys.stderr, flush=True)
    return code
