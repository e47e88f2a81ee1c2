"""Shared helpers: real Hydra composition, real subprocesses, real SQLite stores in tmp folders,
a real PostgreSQL, a real `make server`."""

import os
import signal
import subprocess
import tempfile

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from pipeline.job import config
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
def store(tmp_path):
    """A fresh SQLite store in a temporary folder: its URI and a client on it."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    return uri, lambda: MlflowClient(tracking_uri=uri)


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
def backend(request, tmp_path):
    """The server's store: SQLite in tmp_path, or a new database on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"
    return request.getfixturevalue("postgres")(f"server_{tmp_path.name.lower()[-40:]}")


@pytest.fixture
def server(tmp_path, backend):
    """``make server`` on a free port with its store ``backend``; yields its base URL, port and
    log (the server's stderr)."""
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            ["make", "-s", "server", f"PORT={port}", f"ARTIFACTS={tmp_path / 'artifacts'}",
             f"BACKEND_URI={backend}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True, text=True,
        )  # fmt: skip
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
