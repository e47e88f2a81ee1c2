"""make search: Optuna's TPE sampler under Hydra, every trial a child run of one parent."""

import pytest
from mlflow import MlflowClient

from tests.helpers import parents_and_children, run_cli

pytestmark = pytest.mark.slow


def search(uri, tmp_path, *overrides):
    done = run_cli(
        "pipeline.train", "-m", "sweep=search", "hydra.sweeper.n_trials=4", f"tracking.uri={uri}",
        "train=quick", *overrides, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    parents, children = parents_and_children(MlflowClient(uri))
    return done, parents, children


def test_four_trials_are_four_children_with_distinct_configs(store, tmp_path):
    uri, _ = store
    done, parents, children = search(uri, tmp_path)
    assert len(parents) == 1 and parents[0].info.run_name.startswith("search-")
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    configs = {
        tuple(c.data.params[k] for k in ("model.depth", "model.width", "train.learning_rate"))
        for c in children
    }
    assert len(configs) == 4
    assert "Best value:" in done.stdout + done.stderr


def test_diverging_trials_are_failures_for_the_sampler(store, tmp_path):
    uri, _ = store
    done, parents, children = search(
        uri, tmp_path, "model.depth=3", "model.width=64",
        "train.learning_rate=tag(log,interval(0.01,100))",
    )  # fmt: skip
    status = [c.info.status for c in children]
    assert sorted(set(status)) == ["FAILED", "FINISHED"], status
    output = done.stdout + done.stderr
    assert output.count("Failed experiment") == status.count("FAILED")  # told as failures
    # the sampler maximised the validation accuracy, the jobs' return value
    best = max(c.data.metrics["val_accuracy"] for c in children if c.info.status == "FINISHED")
    assert f"Best value: {best}" in output
    assert parents[0].data.metrics["jobs_failed"] == status.count("FAILED")
