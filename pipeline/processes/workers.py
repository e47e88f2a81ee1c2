"""The launcher's worker processes: which one died first, when a pool breaks; their state.

When one of joblib's loky workers dies (the kernel's out-of-memory killer, ``kill -9``),
loky kills every other worker and the whole batch fails at once. To fail only the job of
the worker that died, the launcher must know which died first: this watcher learns of
each child's death the moment it happens, through a Linux pidfd, in a thread of its own.
"""

import contextlib
import os
import re
import select
import signal
import threading
import time

import psutil

# A worker process's state across the jobs it runs. It lives here, not in pipeline.train: a
# launcher pickles Hydra's job function by value (hydra.main wraps it), with a copy of the
# globals it reads, so a list of pipeline.train read there would be new in every job.
stopped: list[int] = []  # the signal that stopped this process's jobs, once one has
watched: list = []  # [the launcher's parent run watched, then LAUNCHER_DIED once it is gone]
LAUNCHER_DIED = "launcher died"


def launcher_died() -> bool:
    """Whether this worker's launcher is gone: its jobs are being ended (stops.watch_launcher)."""
    return LAUNCHER_DIED in watched


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
