"""Shared helpers: real Hydra composition, real subprocesses, real SQLite stores in tmp folders,
a real PostgreSQL, a real `make server`."""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pipeline.job import config
from pipeline.store import tracking
from tests.helpers import CONF, ROOT, fetch, free_port

config.register()


@pytest.fixture
def compose_config():
    """compose(*overrides, hydra=False) -> the composed config, as Hydra builds it for a job
    (with Hydra's own node if ``hydra``)."""

    def composed(*overrides: str, hydra: bool = False):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield composed


@pytest.fixture
def new_store(tmp_path):
    """A new SQLite store in a temporary folder, created by the first process to use it: its
    URI and a client on it. The client connects as the pipeline does, under the lock that
    lets one process create a new store's schema: a test polling while its subprocess
    creates the store must not race it."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    return uri, lambda: tracking.connect(uri)


@pytest.fixture(scope="session")
def empty_database(tmp_path_factory) -> Path:
    """An empty SQLite store's database, created by MLflow once a session (per xdist worker):
    creating the schema takes a process about a second of CPU."""
    database = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    tracking.connect(f"sqlite:///{database}")
    return database


@pytest.fixture
def store(new_store, tmp_path, empty_database):
    """``new_store`` as the first command leaves it: a copy of an empty store's database
    (tests of what creates a store, or of what must not, use ``new_store``)."""
    (tmp_path / "store").mkdir()
    shutil.copyfile(empty_database, tmp_path / "store" / "mlflow.db")
    return new_store


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (pgserver's binaries) in a temporary folder, listening on a
    Unix socket only; yields new_database(name) -> a postgresql:// URL of a new, empty
    database on it. Stopped and removed at the end of the session."""
    import pgserver  # the dev extra: a test of the server extra only

    # A short folder: the socket's path must stay under the 107 characters Unix allows.
    folder = tempfile.mkdtemp(prefix="pg-", dir="/tmp")
    server = pgserver.get_server(folder, cleanup_mode="delete")

    def new_database(name: str) -> str:
        server.psql(f"CREATE DATABASE {name};")
        return f"postgresql://postgres:@/{name}?host={folder}"

    try:
        yield new_database
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """The server's store: sqlite (in a temporary folder) or postgresql (a real PostgreSQL)."""
    return request.param


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """serve(backend, store, auth) -> (base URL, port, log): ``make server`` on a free port with
    its store ``store(folder)``, one for each backend and auth, started at its first use and
    kept for the session (an xdist worker's own); a server starts about ten processes."""
    started = {}
    with contextlib.ExitStack() as stack:

        def serve(backend: str, store, auth: bool = False) -> tuple[str, int, Path]:
            if (backend, auth) not in started:
                folder = tmp_path_factory.mktemp(f"server-{backend}{'-auth' if auth else ''}")
                server = started_server(folder, store(folder), auth)
                started[backend, auth] = stack.enter_context(server)
            return started[backend, auth]

        yield serve


@pytest.fixture
def auth(request):
    """Whether ``server`` runs MLflow's basic-auth app: parametrize indirectly with True. Its
    admin (ADMIN_PASSWORD) is then this process's user, and its subprocesses'."""
    return getattr(request, "param", False)


ADMIN_PASSWORD = "admin-Pw-7c1e9d"  # a test server's first admin's


@pytest.fixture
def server(request, servers, backend, auth, monkeypatch):
    """The session's server on ``backend`` (with the basic-auth app if ``auth``): its base URL,
    port and the lines of its log (its stderr) written during this test. Its store holds the
    session's earlier tests' runs: a test keeps to an experiment of its own."""

    def store(folder: Path) -> str:
        if backend == "sqlite":
            return f"sqlite:///{folder / 'mlflow.db'}"
        return request.getfixturevalue("postgres")(f"server{'_auth' if auth else ''}")

    if auth:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    base, port, log = servers(backend, store, auth)
    return base, port, LogSince(log)


@contextlib.contextmanager
def started_server(folder: Path, backend_uri: str, auth: bool = False, *make_args: str):
    """``make server`` on a free port, its store ``backend_uri``, its artifacts and log in
    ``folder`` (with MLflow's basic-auth app if ``auth``, its admin's password ADMIN_PASSWORD),
    stopped at the end; yields its base URL, port and log (the server's stderr)."""
    port = free_port()
    log = folder / "server.log"
    env = os.environ | {"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD} if auth else None
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [
                "make",
                "-s",
                "server",
                f"PORT={port}",
                f"ARTIFACTS={folder / 'artifacts'}",
                f"BACKEND_URI={backend_uri}",
                *(["AUTH=1"] if auth else []),
                *make_args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            text=True,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        first_line = process.stdout.readline()  # printed once the server answers
        assert first_line.startswith(f"MLflow tracking server on {base}"), log.read_text()
        ui = f"{base}/#/experiments?workflowType=machine_learning"
        assert ui in process.stdout.readline()
        assert fetch(f"{base}/health", timeout=10) == b"OK"
        yield base, port, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


class LogSince:
    """A log file's text written since this object was made (a test's part of a session's)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, path.stat().st_size

    def read_text(self) -> str:
        with open(self.path) as log:
            log.seek(self.offset)
            return log.read()


@pytest.fixture
def read_only():
    """read_only(folder): make ``folder`` and all in it unwritable, for root too: a read-only
    bind mount of it where the kernel allows it, else the immutable attribute (root writes
    through permissions), else its permissions; skips if none works; undone after."""
    undo = []

    def freeze(folder: Path) -> None:
        def run(*command: str) -> bool:
            return subprocess.run(command, capture_output=True).returncode == 0

        if run("mount", "--bind", str(folder), str(folder)):
            undo.append(("umount", str(folder)))
            run("mount", "-o", "remount,ro,bind", str(folder))  # else: chattr below
        chattr = not writes_fail(folder) and shutil.which("chattr")
        if chattr and run("chattr", "-R", "+i", str(folder)):
            undo.append(("chattr", "-R", "-i", str(folder)))
        if not writes_fail(folder) and run("chmod", "-R", "a-w", str(folder)):  # not root
            undo.append(("chmod", "-R", "u+w", str(folder)))
        if not writes_fail(folder):
            pytest.skip(f"cannot make {folder} read-only here")

    yield freeze
    for command in reversed(undo):  # a mount left read-only (busy) fails the test
        subprocess.run(command, capture_output=True, check=True)


def writes_fail(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (each module's in its order): pytest-xdist's workers then end on
    short tests that spread over them, not on one long test while the others wait."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
