"""The launcher's worker processes: which one died first, when a pool breaks; their state;
their launcher's death.

When one of joblib's loky workers dies (the kernel's out-of-memory killer, ``kill -9``),
loky kills every other worker and the whole batch fails at once. To fail only the job of
the worker that died, the launcher must know which died first: this watcher learns of
each child's death the moment it happens, through a Linux pidfd, in a thread of its own.
A worker learns of its launcher's death the same way (``wait_for_exit``).
"""

import _multiprocessing
import contextlib
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

POLL_SECONDS = 0.1  # how often a process's exit is polled for where there is no pidfd


class Guard:
    """The lock a job holds while it creates its run and while it writes its final results
    and status, and that run's id (store.tracking.RunGuard writes under it): the watcher
    takes it for good when the launcher dies, so it never ends a run between the two."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.run_id: str | None = None


class Worker:
    """A process's state across the jobs it runs and the stops it takes (``state``): a
    sweep's worker's, or its launcher's (``stop_actions``).

    It lives here, not in pipeline.train: a launcher pickles Hydra's job function by value
    (hydra.main wraps it), with a copy of the globals it reads, so an object of
    pipeline.train read there would be new in every job.
    """

    def __init__(self) -> None:
        self.stopped_by: int | None = None  # the signal that stopped its jobs, once one has
        self.watching = False  # its launcher is watched (stops.watch_launcher)
        self.launcher_died = False  # its jobs are being ended: it starts no other
        self.guard = Guard()  # its job's run in flight, against the watcher
        # what a stop of the launcher's sweep does first, beside interrupting its workers
        self.stop_actions: list[Callable[[], None]] = []  # (stopping.on_stop)


state = Worker()


def wait_for_exit(pid: int) -> None:
    """Until process ``pid``, this one's parent, has exited: told at once through a Linux
    pidfd, else polled for."""
    with contextlib.suppress(AttributeError, OSError):  # no pidfd here, or gone already
        fd = os.pidfd_open(pid)
        if os.getppid() == pid:  # the pidfd is our parent's, not a new process's of its pid
            select.select([fd], [], [])  # readable once it has exited
        os.close(fd)
    while os.getppid() == pid:
        time.sleep(POLL_SECONDS)


def release_launcher_resources(launcher_pid: int) -> None:
    """What a killed loky launcher would have removed on its way out: its named semaphores
    (its queues' locks) and joblib's temporary folders, each removed by the first of its
    workers to get to it and unregistered from loky's resource tracker. Left to the tracker,
    they are removed once the last worker has exited, with a warning that they "leaked".
    One line on stderr names what could not be removed, if anything."""
    from joblib.externals.loky.backend import resource_tracker

    left = []
    for path in Path("/dev/shm").glob(f"sem.loky-{launcher_pid}-*"):
        name = "/" + path.name.removeprefix("sem.")
        try:
            _multiprocessing.sem_unlink(name)
        except FileNotFoundError:  # another worker's
            continue
        except OSError as error:
            left.append(f"{path} ({error.strerror})")
            continue
        resource_tracker.unregister(name, "semlock")
    places = {os.environ.get("JOBLIB_TEMP_FOLDER"), "/dev/shm", tempfile.gettempdir()} - {None}
    for place in places:
        for folder in Path(place).glob(f"joblib_memmapping_folder_{launcher_pid}_*"):
            claimed = folder.with_name(f".removing-{folder.name}")
            try:
                folder.rename(claimed)  # one worker only gets it
            except FileNotFoundError:
                continue
            except OSError as error:
                left.append(f"{folder} ({error.strerror})")
                continue
            resource_tracker.unregister(str(folder), "folder")
            shutil.rmtree(claimed, ignore_errors=True)
            if claimed.exists():
                left.append(str(claimed))
    if left:
        print(f"left behind by the killed launcher: {', '.join(left)}", file=sys.stderr)


# loky's message names the workers' exit codes, e.g. "{SIGKILL(-9)}" or "{EXIT(1)}".
KILLED_BY = re.compile(r"(SIG[A-Z]+)\(-(\d+)\)")


class DeathWatch:
    """Records (pid, monotonic time) of each child process of this one as it dies.

    A death wakes the watcher at once; it looks for new children every ``poll_seconds``
    (listing them reads every process of the machine: every 50 ms, that was 14% of a core
    taken from the workers).
    """

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.deaths: dict[int, float] = {}
        self._fds: dict[int, int] = {}  # pidfd -> pid
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-deaths", daemon=True)

    def __enter__(self) -> "DeathWatch":
        if hasattr(os, "pidfd_open"):  # Linux; elsewhere no job is told apart
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def first_dead(self) -> int | None:
        """The pid of the child that died first, if any did."""
        return min(self.deaths, key=self.deaths.get) if self.deaths else None

    def _watch(self) -> None:
        poller = select.poll()
        while not self._stop.is_set():
            for child in psutil.Process().children():
                if child.pid not in self._fds.values():
                    try:
                        fd = os.pidfd_open(child.pid)
                    except OSError:  # gone already
                        continue
                    self._fds[fd] = child.pid
                    poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(self._poll_seconds * 1000):
                self.deaths.setdefault(self._fds[fd], time.monotonic())
                poller.unregister(fd)
                os.close(fd)


def death_reason(error: BaseException) -> str:
    """Why a worker died, from loky's message: e.g. ``worker killed by signal 9 (SIGKILL);
    out of memory?``."""
    match = KILLED_BY.search(str(error))
    if match is None:
        return "its worker process died"
    name, number = match.groups()
    hint = "; out of memory?" if name == "SIGKILL" else ""
    return f"worker killed by signal {number} ({name}){hint}"


def interrupt_children() -> None:
    """SIGINT to each child process of this one, as a terminal's Ctrl-C sends it to the
    whole process group (the workers handle a second one as no more than the first)."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGINT)
