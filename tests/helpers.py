"""Helpers for the tests: real subprocesses and real MLflow stores, nothing mocked."""

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
from hydra.core.global_hydra import GlobalHydra

from pipeline.store import tracking
from pipeline.sweeps import parent_run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# The last commit before the validation split: what "recorded before this change" means.
BEFORE_VALIDATION = "7e7dec4ca65a43608e72e6c5a93641598afc5c6e"

# A sweep of two quick jobs in two workers: the smallest that shows a parent and its children.
TWO_JOBS = [
    "sweep=default",
    "train=quick",
    "model.depth=1,2",
    "model.width=4",
    "train.learning_rate=0.5",
    "hydra.launcher.n_jobs=2",
]


def run_cli(*args, cwd=None, timeout=300, env=None):
    """``python -m <args>`` in a real subprocess; returns the CompletedProcess."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment |= env or {}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def all_runs(client, experiment: str | None = None):
    """The store's runs, or the runs of the experiment named ``experiment``."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        return client.search_runs([found.experiment_id]) if found else []
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, body: dict | None = None, timeout: float = 60) -> bytes:
    """GET (or POST ``body`` as JSON), retrying only while the server is not up yet."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError:
            raise
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def ui_process(uri: str, cwd: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """``python -m pipeline.ui`` on the store ``uri``, on a free port: (the process, its
    port), stopped after. Its first line comes once the UI answers."""
    port = free_port()
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.ui", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process, port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def parents_and_children(client, experiment: str | None = None) -> tuple[list, list]:
    """The store's runs (or ``experiment``'s) split into runs of their own (sweeps' parents)
    and sweeps' children."""
    runs = all_runs(client, experiment)
    children = [r for r in runs if tracking.parent_of(r)]
    return [r for r in runs if not tracking.parent_of(r)], children


def assert_one_error_line(done, *fragments: str, code: int = 2) -> None:
    """``done`` exited ``code`` with exactly one line on stderr, ``error: ...``, holding every
    fragment, and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def call_main(capture, main, *argv: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``main(argv)``, an entry point's, called in this process as run_cli runs it in a new
    one (in ``cwd``, with ``env``, without MLFLOW_TRACKING_URI): its exit code and what it
    printed (``capture``: capsys, or capfd for its child processes' output too). The signal
    handlers, unraisable hook, argv, environment, folder and loggers it may change are put back
    (a search's one worker, run in its launcher, quiets the job's loggers and Optuna's); Hydra's
    global state must be left as it was (the next test's compose starts afresh)."""
    hydra_initialized = GlobalHydra.instance().is_initialized()
    loggers = logger_settings()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    argv_before, hook, environment = sys.argv, sys.unraisablehook, dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(env or {})
    capture.readouterr()  # what came before
    try:
        with contextlib.chdir(cwd or os.getcwd()):
            code = main(list(argv))
    except SystemExit as exited:  # argparse's
        code = exited.code
    finally:
        sys.argv, sys.unraisablehook = argv_before, hook
        os.environ.clear()
        os.environ.update(environment)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for logger, (handlers_before, propagate, level) in loggers.items():
            logger.handlers[:], logger.propagate, logger.level = handlers_before, propagate, level
    printed = capture.readouterr()
    assert GlobalHydra.instance().is_initialized() == hydra_initialized, printed.err[-3000:]
    return subprocess.CompletedProcess([main.__module__, *argv], code, printed.out, printed.err)


def logger_settings() -> dict:
    """Each logger's handlers, propagation and level, the root's included."""
    known = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    return {
        logger: (list(logger.handlers), logger.propagate, logger.level)
        for logger in [logging.root, *known]
    }


def stops_caught(pid: int) -> bool:
    """Whether process ``pid`` has installed its stop handlers: a handler of its own for
    SIGTERM, in Linux's SigCgt mask (SIGINT's is Python's own from the start)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def wait_until(condition, timeout: float = 180, every: float = 0.1, what: str = "") -> None:
    """Until ``condition()`` holds; AssertionError (saying ``what`` was awaited) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}" if what else "timed out"
        time.sleep(every)


def outside_the_canvas(figure) -> list[float]:
    """How far (inches: left, bottom, right, top) what ``figure`` draws reaches beyond its
    canvas, each 0 when all of its text is inside. Drawn first: a constrained layout places
    its axes then."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    drawn = figure.get_tightbbox(canvas.get_renderer())  # every visible artist, ticks drawn
    width, height = figure.get_size_inches()
    beyond = [-drawn.x0, -drawn.y0, drawn.x1 - width, drawn.y1 - height]
    return [round(max(0.0, inches), 2) for inches in beyond]


def jobs_past_their_first_point(client, jobs: int, cpu_seconds: float = 0.5):
    """A condition: ``jobs`` of the store's sweep jobs are RUNNING, and each one's worker has
    spent ``cpu_seconds`` of CPU training since its data set was logged (its last write before
    training, whose first point is iteration 0), whatever the machine's load."""
    trained_from: dict[str, float] = {}  # run id -> its worker's CPU time when it began training

    def condition() -> bool:
        running = [r for r in parents_and_children(client)[1] if r.info.status == "RUNNING"]
        for run in running:
            if run.inputs.dataset_inputs and run.info.run_id not in trained_from:
                trained_from[run.info.run_id] = cpu_time(worker(run))
        trained = [r for r in running if r.info.run_id in trained_from]
        return len(trained) >= jobs and all(
            cpu_time(worker(r)) - trained_from[r.info.run_id] >= cpu_seconds for r in trained
        )

    return condition


def worker(run) -> int:
    return int(run.data.tags[parent_run.WORKER_TAG])


def cpu_time(pid: int) -> float:
    """The CPU seconds process ``pid`` has spent (user and system)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def loky_leftovers(launcher_pid: int) -> list[str]:
    """What loky and joblib left in /dev/shm for a launcher: its semaphores
    (sem.loky-<pid>-...) and memmapping folders (joblib_memmapping_folder_<pid>_...), by
    name, not by any name holding the pid's digits (another sweep's may)."""
    named = re.compile(rf"loky-{launcher_pid}-|memmapping_folder_{launcher_pid}_")
    return [name for name in os.listdir("/dev/shm") if named.search(name)]


def made_once(tmp_path_factory, name: str, make) -> Path:
    """Folder ``name``, filled by ``make(folder)`` once in the test session however many
    xdist workers ask: the first makes it, the others wait for it (a lock) and share it, so
    its users read it, or write beside what the others read."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's, above its workers' own
    folder, made = root / name, root / f"{name}.made"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker's that failed to make it
            folder.mkdir()
            make(folder)
            made.touch()
    return folder
