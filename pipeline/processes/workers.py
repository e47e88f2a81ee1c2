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
    """Records the pids of this process's children in the order they die (``deaths``).

    Each child's pidfd is in one epoll set, whose kernel queue lists the pidfds in the order
    they became readable, which is the order the children exited: so the order holds even
    when loky kills the other workers before this thread is scheduled again and several
    deaths are read at once (poll() would list them in the order they were registered). The
    watcher looks for new children every ``poll_seconds`` (listing them reads every process
    of the machine: every 50 ms, that was 14% of a core taken from the workers).
    """

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.deaths: list[int] = []
        self._pids: dict[int, int] = {}  # pidfd -> pid
        self._poll_seconds = poll_seconds
        self._epoll = select.epoll() if hasattr(os, "pidfd_open") else None  # Linux only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-deaths", daemon=True)
        if self._epoll:
            self._wake, self._waker = os.pipe()  # wakes the watcher to stop it
            self._epoll.register(self._wake, select.EPOLLIN)

    def __enter__(self) -> "DeathWatch":
        if self._epoll:  # elsewhere no job is told apart
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops the watcher and closes its descriptors."""
        if self._epoll:
            self._stop_watching()
            for fd in [*self._pids, self._wake, self._waker]:
                os.close(fd)
            self._epoll.close()

    def first_dead(self) -> int | None:
        """The pid of the child that died first, if any did: the watcher is stopped and
        every death it has not read yet is read here, so none that happened is missed."""
        if not self._epoll:
            return None
        self._stop_watching()
        self.record_deaths(timeout=0)
        return self.deaths[0] if self.deaths else None

    def watch_new_children(self) -> None:
        """Adds the children born since the last call to the watched ones."""
        for child in psutil.Process().children():
            if child.pid not in self._pids.values() and child.pid not in self.deaths:
                try:
                    fd = os.pidfd_open(child.pid)
                except OSError:  # gone already
                    continue
                self._pids[fd] = child.pid
                self._epoll.register(fd, select.EPOLLIN)

    def record_deaths(self, timeout: float) -> None:
        """Appends to ``deaths`` the watched children that have died, in the order they died,
        waiting up to ``timeout`` seconds for one."""
        for fd, _ in self._epoll.poll(timeout):
            if fd == self._wake:
                continue
            self.deaths.append(self._pids.pop(fd))
            self._epoll.unregister(fd)
            os.close(fd)

    def _stop_watching(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            os.write(self._waker, b"x")
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.watch_new_children()
            self.record_deaths(self._poll_seconds)


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
