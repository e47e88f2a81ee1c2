"""Faults as a hostile user or a broken machine makes them: each ends in one line on stderr
(``error: ...``) naming the thing, exit 2, no traceback, and the store as it was.

Real parts only: stores made unwritable or corrupt on disk, a port held open by the test, a
port on the loopback that nothing listens on, the command line in subprocesses.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline import search, server, train, ui
from pipeline.job.config import machine_memory
from pipeline.job.run import run_job
from pipeline.store import tables, tracking
from tests.helpers import (
    all_runs,
    assert_entry_fails_in_one_line,
    assert_one_error_line,
    free_port,
    run_cli,
)

QUICK = ["train.iterations=40", "train.log_every=4"]


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    """A real store with one finished run, made once: a new store's schema takes seconds."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    client = tracking.connect(f"sqlite:///{db}")
    run_id = tracking.start_run(client, tracking.experiment_id(client, "kept"), "kept", {})
    client.set_terminated(run_id)
    return db, run_id


@pytest.fixture
def filled_store(template_db, tmp_path):
    """A copy of the template store in tmp_path/store: (its URI, its mlflow.db, the run id)."""
    template, run_id = template_db
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(template, db)
    return f"sqlite:///{db}", db, run_id


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def frozen(tmp_path):
    """freeze(folder, *files): make them unwritable, for root too where the kernel allows
    (root writes through permissions, not through the immutable attribute); undone after."""
    frozen_paths = []

    def freeze(*paths: Path) -> None:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
            frozen_paths.append(path)
            if os.geteuid() == 0:
                if shutil.which("chattr") is None:
                    pytest.skip("running as root, where only chattr +i makes a folder read-only")
                if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                    pytest.skip("running as root and this file system refuses chattr +i")
        probe = paths[0] / "probe"
        try:
            probe.write_text("x")
        except OSError:
            return
        probe.unlink()
        pytest.skip("the folder is still writable here")

    yield freeze
    for path in frozen_paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755 if path.is_dir() else 0o644)


# ---- the store ----------------------------------------------------------------------------


@pytest.mark.slow
def test_folder_of_the_store_is_a_file(tmp_path):
    (tmp_path / "store").write_text("a file where the store's folder should be\n")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    done = run_cli("pipeline.train", f"tracking.uri={uri}", *QUICK, cwd=tmp_path)
    assert_one_error_line(done, "cannot make the store's folder", str(tmp_path / "store"))
    assert (tmp_path / "store").read_text() == "a file where the store's folder should be\n"
    assert not (tmp_path / "outputs").exists()  # Hydra never started


@pytest.mark.slow
def test_unwritable_store_is_refused_and_left_as_it_was(filled_store, frozen, tmp_path):
    uri, db, run_id = filled_store
    frozen(db.parent, db)
    done = run_cli("pipeline.train", f"tracking.uri={uri}", *QUICK, cwd=tmp_path)
    assert_one_error_line(done, f"the store {db} cannot be written")
    assert "tracking.uri=" in done.stderr  # what to do
    runs = all_runs(MlflowClient(uri))
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "not_a_database"])
def test_corrupt_store_is_refused_by_every_command(filled_store, tmp_path, damage):
    uri, db, _ = filled_store
    if damage == "truncated":
        os.truncate(db, db.stat().st_size // 2)
    else:
        db.write_text("these are not the droids\n")
    before = digest(db)
    reason = "database disk image is malformed" if damage == "truncated" else "not a database"
    env = {"MLFLOW_TRACKING_URI": uri}
    commands = [["pipeline.train", "-m", f"tracking.uri={uri}", *QUICK, "model.depth=1,2"]]
    if damage == "truncated":  # every command once; the other damage through the sweep only
        commands += [
            ["pipeline.train", *QUICK],
            ["pipeline.report"],
            ["pipeline.reproduce", "0a1b"],
            ["pipeline.ui", "--port", str(free_port())],
        ]
    for command in commands:
        done = run_cli(*command, cwd=tmp_path, env=env)
        assert_one_error_line(done, f"the store {db} is not an intact SQLite database", reason)
    assert digest(db) == before  # nothing written
    assert not (tmp_path / "multirun").exists()  # the sweep launched no job


@pytest.mark.slow
def test_unknown_uri_scheme(tmp_path):
    done = run_cli("pipeline.train", "-m", "tracking.uri=garbage://x", *QUICK, cwd=tmp_path)
    assert_one_error_line(done, "tracking.uri=garbage://x is not a store MLflow knows")
    assert sorted(os.listdir(tmp_path)) == []  # no store, no Hydra outputs


# ---- a tracking server that does not answer -------------------------------------------------


@pytest.mark.slow
def test_dead_tracking_server_is_reported_by_the_launcher_within_seconds(tmp_path):
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for sweep in ([], ["-m", "model.depth=1,2"]):
        start = time.monotonic()
        done = run_cli("pipeline.train", *sweep, f"tracking.uri={address}", *QUICK, cwd=tmp_path)
        seconds = time.monotonic() - start
        assert_one_error_line(done, f"the tracking server {address} does not answer")
        # MLflow's own tries take ~4 min; a loaded machine's process start alone may take 30 s
        assert seconds < 120, f"{seconds:.0f} s to report a dead server"
        assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()


# ---- values ---------------------------------------------------------------------------------


LONG_NAME = "x" * 501  # MLflow's limit is 500 characters


@pytest.mark.parametrize(
    ("entry", "sweep"),
    [(train.cli, []), (train.cli, ["-m"]), (search.main, [])],
    ids=["train", "train -m", "search"],  # not a function's address: each xdist worker's differs
)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tracking.experiment=''"], "tracking.experiment='' is invalid: an experiment needs a"),
        ([f"tracking.experiment={LONG_NAME}"], "501 characters, more than the 500 MLflow allows"),
        (["train.learning_rate=inf"], "train.learning_rate=inf is invalid: must be a finite"),
        (["train.learning_rate=nan"], "train.learning_rate=nan is invalid: must be a finite"),
        (["dataset.noise=inf"], "dataset.noise=inf is invalid: must be a finite number >= 0"),
        (["train.min_delta=inf"], "train.min_delta=inf is invalid: must be a finite number >= 0"),
        (["dataset=мун"], "dataset=мун is invalid: known options: blobs, breast_cancer, circles"),
        (["model.depth=мун"], "model.depth=мун cannot be parsed: Hydra's override grammar"),
    ],
)
def test_a_bad_value_is_one_line_before_anything_runs(
    entry, sweep, overrides, message, monkeypatch, capsys, tmp_path
):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert_entry_fails_in_one_line(entry, [*sweep, *overrides, f"tracking.uri={uri}"], capsys,
                                   message)  # fmt: skip
    assert os.listdir(tmp_path) == []  # no store, no Hydra outputs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=-5"], "error: seed=-5 is invalid: must be between 0 and 4294967295"),
        (["model.width=10000000"], "error: model.width=10000000 is invalid: about "),
        (["-m", "model.width=4,10000000"], "error: model.width=10000000 is invalid: about "),
        (["dataset.n_samples=10000000000"], "error: dataset.n_samples=10000000000 is invalid"),
    ],
)
def test_value_that_cannot_work_is_refused_before_anything_is_created(tmp_path, overrides, message):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    done = run_cli("pipeline.train", *overrides, f"tracking.uri={uri}", *QUICK, cwd=tmp_path)
    assert_one_error_line(done, message)
    if "about" in message:
        memory = f"the {machine_memory() / 2**30:.0f} GiB this machine has"
        assert " GiB of parameters, activations and their gradients for " in done.stderr
        assert memory in done.stderr
    assert sorted(os.listdir(tmp_path)) == []  # no store, no Hydra outputs


# ---- ports ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["pipeline.ui", "pipeline.server"])
def test_port_that_is_taken_is_one_line_and_no_address(tmp_path, command):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
        env["PORT"] = ""  # as `make` exports it when it is not set
        done = run_cli(command, "--port", str(port), cwd=tmp_path, env=env, timeout=60)
    assert_one_error_line(done, f"cannot listen on 127.0.0.1:{port}", "PORT=")
    assert done.stdout == ""  # no address of the other program


@pytest.mark.parametrize("entry", [ui.main, server.main])
@pytest.mark.parametrize(
    ("argv", "port", "message"),
    [
        ([], "abc", "PORT=abc is invalid: a port is a number from 1 to 65535"),
        ([], "99999", "PORT=99999 is invalid: a port is a number from 1 to 65535"),
        (["--port", "abc"], "", "--port=abc is invalid"),
        (["--port", "65536"], "", "--port=65536 is invalid"),
        (["--host", "no-such-host.invalid"], "", "HOST=no-such-host.invalid is not an address"),
        (["--host", "a" * 70], "", "is not an address of this machine"),  # too long to look up
    ],
)
def test_a_port_or_host_that_is_not_one_is_one_line(
    entry, argv, port, message, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("PORT", port)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    assert_entry_fails_in_one_line(entry, argv, capsys, message)
    assert os.listdir(tmp_path) == []  # no store, no server's folder: refused before them


# ---- names are not paths --------------------------------------------------------------------


def test_experiment_name_never_leads_outside_the_store(compose_config, filled_store, tmp_path):
    uri, db, _ = filled_store
    names = ["../../outside/escaped", "/absolute/name", "..", "a/../../b"]
    for name in names:
        outcome = run_job(compose_config(f"tracking.uri={uri}", f"tracking.experiment='{name}'",
                                         *QUICK))  # fmt: skip
        assert MlflowClient(uri).get_experiment(outcome.experiment_id).name == name  # kept
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    outside = [p for p in written if not p.is_relative_to(db.parent)]
    assert not outside
    artifacts = [p for p in written if p.is_relative_to(db.parent / "artifacts")]
    assert sum(p.name == "config.yaml" for p in artifacts) == len(names)


def test_folder_name_is_one_component_and_never_dots():
    for name in ["..", ".", "../../x", "/etc/passwd", "a\\..\\b", "", "." * 300]:
        folder = tracking.folder_name(name)
        assert "/" not in folder and "\\" not in folder and not folder.startswith(".")
        assert 0 < len(folder) <= 100
    assert tracking.folder_name("moons") == "moons"
    assert tracking.folder_name("default-20261128-100412") == "default-20261128-100412"


# ---- the latest sweep, however many runs -----------------------------------------------------


def test_latest_sweep_is_found_behind_more_than_200_newer_runs(filled_store):
    uri, _, _ = filled_store
    client = tracking.connect(uri)
    experiment = tracking.experiment_id(client, "big")
    older = tracking.start_run(client, experiment, "older", {tracking.SWEEP_TAG: "a"})
    parent = tracking.start_run(client, experiment, "sweep", {tracking.SWEEP_TAG: "b"})
    for i in range(201):  # its jobs start after it
        tracking.start_run(client, experiment, f"job{i}", {}, parent_run_id=parent)
    assert older != parent
    assert tables.latest_sweep(client).info.run_id == parent
