"""Reproduction from a run's recorded config: bit-for-bit curves, and one-line errors."""

import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import optuna
import pytest
import yaml

from pipeline import reproduce as reproduce_command
from pipeline.job.config import ADDED_LATER, LAUNCH_SETTINGS
from pipeline.job.recorded import recorded_config
from pipeline.job.run import run_job
from pipeline.search import Pruning
from tests.helpers import (
    BEFORE_VALIDATION,
    ROOT,
    all_runs,
    call_main,
    parents_and_children,
    run_cli,
    wait_until,
)
from tests.test_job import EARLY_STOPPING

pytestmark = pytest.mark.slow


@pytest.fixture
def recorded(compose_config, store):
    """A finished run in a fresh store: (uri, client factory, its run id)."""
    uri, client = store
    outcome = run_job(compose_config(f"tracking.uri={uri}", "train=quick", "model.width=8"))
    return uri, client, outcome.run_id


def reproduce(capfd, uri, *args, cwd=None):
    """``make reproduce`` of ``args`` on the store ``uri``, as main(argv) in this process."""
    return call_main(
        capfd, reproduce_command.main, *args, cwd=cwd, env={"MLFLOW_TRACKING_URI": uri}
    )


def test_run_reproduces_identically_from_its_run_id(recorded, tmp_path, capfd):
    uri, client, run_id = recorded
    done = reproduce(capfd, uri, run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # 2 curves x 101 points, test_cost once, 3 accuracies
    assert "identical: all 206 values" in done.stdout
    runs = all_runs(client())
    (new,) = [r for r in runs if r.info.run_id != run_id]
    assert new.data.tags["reproduced_from"] == run_id
    assert new.info.experiment_id == client().get_run(run_id).info.experiment_id
    assert new.info.status == "FINISHED" and new.info.run_name == "d2-w8-lr0.1"
    assert new.data.params["train.blas_threads"] == "1"
    for key in ("train_cost", "val_cost"):
        original = [m.value for m in client().get_metric_history(run_id, key)]
        again = [m.value for m in client().get_metric_history(new.info.run_id, key)]
        assert original == again and len(original) == 101


def test_run_reproduces_from_its_config_file_not_from_conf(recorded, tmp_path, capfd):
    uri, client, run_id = recorded
    config = tmp_path / "mailed" / "config.yaml"
    config.parent.mkdir()
    client().download_artifacts(run_id, "config.yaml", str(config.parent))
    done = reproduce(capfd, uri, str(config), "--against", run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "identical" in done.stdout
    new = next(r for r in all_runs(client()) if r.info.run_id != run_id)
    assert new.data.tags["reproduced_from_config"] == "config.yaml"


def test_different_config_is_reported_with_its_largest_deviation(recorded, tmp_path, capfd):
    uri, client, run_id = recorded
    config = tmp_path / "config.yaml"
    client().download_artifacts(run_id, "config.yaml", str(tmp_path))
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    done = reproduce(capfd, uri, str(config), "--against", run_id, cwd=tmp_path)
    assert done.returncode == 1
    assert "differs: largest deviation" in done.stdout and "values differ" in done.stdout
    loose = reproduce(capfd, uri, str(config), "--against", run_id, "--rtol", "10", cwd=tmp_path)
    assert loose.returncode == 0 and "match within rtol=10" in loose.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git and the project's history")
def test_a_run_recorded_before_validation_existed_reproduces_identically(store, tmp_path, capfd):
    """A real old run: the code of the commit before the validation split, run from git."""
    uri, client = store
    old_code = tmp_path / "before"
    archive = subprocess.run(
        ["git", "archive", "--format=tar", BEFORE_VALIDATION, "pipeline", "conf"],
        cwd=ROOT,
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"the commit before validation is not in this clone: {archive.stderr}")
    old_code.mkdir()
    (tmp_path / "before.tar").write_bytes(archive.stdout)
    with tarfile.open(tmp_path / "before.tar") as tar:
        tar.extractall(old_code, filter="data")
    # python -m from that folder imports its pipeline/, not the installed one
    old = run_cli("pipeline.train", f"tracking.uri={uri}", "train=quick", cwd=old_code)
    assert old.returncode == 0, old.stderr[-2000:]
    (run,) = all_runs(client())
    client().download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    recorded = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "val_size" not in recorded["dataset"] and "patience" not in recorded["train"]
    assert len(client().get_metric_history(run.info.run_id, "test_cost")) == 101  # a curve

    done = reproduce(capfd, uri, run.info.run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "identical: all 204 values" in done.stdout  # train and test curves, 2 accuracies
    new = next(r for r in all_runs(client()) if r.info.run_id != run.info.run_id)
    for key, value in ADDED_LATER.items():  # it ran with the behaviour of before
        if key.split(".")[0] not in LAUNCH_SETTINGS:  # a search's or sweep's: no job's params
            assert new.data.params[key] == str(value)
    assert new.data.params["n_val"] == "0" and "val_cost" not in new.data.metrics


def test_an_early_stopped_run_reproduces_identically(compose_config, store, tmp_path, capfd):
    uri, _ = store
    cfg = compose_config(f"tracking.uri={uri}", *EARLY_STOPPING)
    outcome = run_job(cfg)
    assert outcome.result.stopped_at < cfg.train.iterations
    done = reproduce(capfd, uri, outcome.run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    n = 2 * len(outcome.result.steps) + 1 + 3 + 2  # curves, test_cost, accuracies, where
    assert f"identical: all {n} values" in done.stdout


def test_job_of_a_parallel_sweep_reproduces_identically(store, tmp_path, capfd):
    uri, client = store
    sweep = run_cli(
        "pipeline.train",
        "-m",
        "sweep=default",
        f"tracking.uri={uri}",
        "train=quick",
        "model.depth=1,2",
        "model.width=8",
        "train.learning_rate=0.3",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    child = parents_and_children(client())[1][0]
    done = reproduce(capfd, uri, child.info.run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "identical" in done.stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("0123456789abcdef", "error: run '0123456789abcdef' not found in sqlite:///"),
        ("{bare}", "error: run {bare} has no config.yaml artifact to reproduce"),
        ("missing.yaml", "error: cannot read config file missing.yaml"),
        ("{garbage}", "is not a config: not valid YAML at line 2"),
        ("{passwd}", "is not a config: it has none of the config's keys"),
        ("{unknown_key}", "is not a valid config at model.colour"),
        ("{bad_value}", "model.depth=-1 is invalid: must be >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_new_run(recorded, tmp_path, capfd, target, message):
    uri, client, run_id = recorded
    bare = client().create_run(client().get_run(run_id).info.experiment_id).info.run_id
    client().set_terminated(bare)
    client().download_artifacts(run_id, "config.yaml", str(tmp_path))
    text = (tmp_path / "config.yaml").read_text()
    files = {
        "garbage": "model: [unclosed\n",
        "passwd": "root:x:0:0:root:/root:/bin/bash\nsecret:x:1000:1000:hunter2:/home:/bin/sh\n",
        "unknown_key": text.replace("model:\n", "model:\n  colour: red\n"),
        "bad_value": text.replace("depth: 2", "depth: -1"),
    }
    for name, content in files.items():
        (tmp_path / f"{name}.yaml").write_text(content)
    names = {"bare": bare} | {k: str(tmp_path / f"{k}.yaml") for k in files}
    target, message = target.format(**names), message.format(**names)
    before = {r.info.run_id for r in all_runs(client())}
    env = {"MLFLOW_TRACKING_URI": uri}
    done = call_main(capfd, reproduce_command.main, target, cwd=tmp_path, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "hunter2" not in done.stderr and "root:x" not in done.stderr  # never the file's lines
    assert {r.info.run_id for r in all_runs(client())} == before


def start_training(uri: str, *overrides: str, cwd) -> subprocess.Popen:
    """``python -m pipeline.train`` of ``overrides`` on the store ``uri``, its output unread."""
    command = [sys.executable, "-m", "pipeline.train", f"tracking.uri={uri}", *overrides]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_run_that_crashed_has_its_config_to_reproduce(store, tmp_path):
    uri, client = store
    long = ["seed=7", "train.iterations=100000000", "train.log_every=1000000"]
    process = start_training(uri, "model.width=8", *long, cwd=tmp_path)
    try:
        wait_until(lambda: has_config(client(), uri), timeout=120)
    finally:
        process.kill()  # a crash: no clean-up runs
        process.wait(timeout=60)
    (run,) = all_runs(client())
    assert run.info.status == "RUNNING"  # it never ended
    cfg, experiment = recorded_config(client(), run.info.run_id)
    assert (cfg.model.width, cfg.seed, cfg.train.iterations) == (8, 7, 100_000_000)
    assert experiment == run.info.experiment_id


def test_a_run_killed_by_sigterm_reproduces_up_to_where_it_stopped(store, tmp_path, capfd):
    """A run killed mid-training was "differs: not the same points were recorded" (exit 1):
    its reproduction trained to the end and recorded final metrics the original never had."""
    uri, client = store
    points = ["train.iterations=30000", "train.log_every=20", "tracking.flush_seconds=0.2"]
    process = start_training(uri, "model.width=8", *points, cwd=tmp_path)
    try:
        wait_until(lambda: len(train_cost(client(), uri)) >= 20, timeout=120)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
    (killed,) = all_runs(client())
    steps = [m.step for m in client().get_metric_history(killed.info.run_id, "train_cost")]
    at = max(steps)
    assert killed.info.status == "KILLED" and 400 <= at < 30000
    assert "train_accuracy" not in killed.data.metrics

    done = reproduce(capfd, uri, killed.info.run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    n = 2 * len(steps)  # train and val curves, no final metric
    assert f"identical up to iteration {at} (the original was KILLED there): all {n} values" in (
        done.stdout
    )
    new = reproduction_of(client(), killed.info.run_id)
    assert new.info.status == "KILLED"  # it was not trained to its config's end either
    assert new.data.tags["killed_reason"] == (
        f"reproduced up to iteration {at}, where run {killed.info.run_id} was KILLED"
    )
    again = client().get_metric_history(new.info.run_id, "train_cost")
    assert max(m.step for m in again) == at == new.data.metrics["stopped_at"]  # not further


def test_a_pruned_trial_reproduces_up_to_where_it_was_pruned(
    compose_config, store, tmp_path, capfd
):
    """A search's pruned trial ("differs: ... ('stopped_at', -1)"): here Optuna's own
    ThresholdPruner prunes it, through the search's listener, at iteration 50."""
    uri, client = store
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0, n_warmup_steps=50)
    )  # -val_cost is below 0: pruned at the first point past the warm-up
    cfg = compose_config(f"tracking.uri={uri}", "train=quick", "model.width=8")
    pruned = run_job(cfg, listeners=[Pruning(study.ask(), "threshold")])
    run = client().get_run(pruned.run_id)
    assert run.info.status == "KILLED" and run.data.tags["pruned_at"] == "50"

    done = reproduce(capfd, uri, pruned.run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    n = 2 * 26 + 1 + 3 + 1  # curves to 50, test_cost, accuracies, stopped_at
    assert f"identical up to iteration 50 (the original was PRUNED there): all {n} values" in (
        done.stdout
    )
    new = reproduction_of(client(), pruned.run_id)
    assert new.info.status == "KILLED" and "pruned_at" not in new.data.tags  # no search's
    assert new.data.tags["killed_reason"].endswith(f"where run {pruned.run_id} was PRUNED")
    assert max(m.step for m in client().get_metric_history(new.info.run_id, "val_cost")) == 50


def reproduction_of(client, run_id):
    (new,) = [r for r in all_runs(client) if r.data.tags.get("reproduced_from") == run_id]
    return new


def train_cost(client, uri) -> list:
    runs = all_runs(client) if Path(uri.removeprefix("sqlite:///")).exists() else []
    return client.get_metric_history(runs[0].info.run_id, "train_cost") if runs else []


def has_config(client, uri) -> bool:
    runs = all_runs(client) if Path(uri.removeprefix("sqlite:///")).exists() else []
    return bool(runs) and "config.yaml" in {
        a.path for a in client.list_artifacts(runs[0].info.run_id)
    }
