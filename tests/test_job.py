"""One job into a real SQLite store in a temporary folder: params, curves, artifacts, status."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.artifacts import download_artifacts

from pipeline.job.config import ConfigError
from pipeline.job.run import run_job

# A job that stops early on validation, well before its last iteration.
EARLY_STOPPING = [
    *("train=early_stop", "dataset.n_samples=100", "dataset.noise=0.25", "dataset.val_size=0.5"),
    *("model.width=64", "train.learning_rate=0.3"),
]


def test_job_records_params_curves_metrics_and_artifacts(compose_config, store, tmp_path):
    uri, client = store
    cfg = compose_config(
        f"tracking.uri={uri}", "train.iterations=90", "train.log_every=10", "model.width=8"
    )
    outcome = run_job(cfg, tags={"hydra.overrides": "model.width=8"})
    run = client().get_run(outcome.run_id)

    assert run.info.status == "FINISHED" and run.info.run_name == "d2-w8-lr0.1"
    assert run.data.tags["hydra.overrides"] == "model.width=8"
    params = run.data.params
    assert params["model.depth"] == "2" and params["model.width"] == "8"
    assert params["train.learning_rate"] == "0.1" and params["dataset.name"] == "moons"
    assert params["seed"] == "0" and params["tracking.experiment"] == "moons"
    assert params["layer_dims"] == "[2, 8, 8, 1]" and params["n_parameters"] == str(24 + 72 + 9)
    assert (params["n_train"], params["n_val"], params["n_test"]) == ("600", "150", "250")
    assert params["dataset.val_size"] == "0.2" and params["train.patience"] == "0"
    assert not [key for key in params if key.startswith(("search.", "sweep."))]  # its parent's

    for key in ("train_cost", "val_cost"):
        history = client().get_metric_history(outcome.run_id, key)
        assert [m.step for m in history] == [*range(0, 90, 10), 90]
        assert [m.value for m in history] == outcome.result.curves[key]
    # the test part is looked at once, at the end: one point, of the final parameters
    (test_cost,) = client().get_metric_history(outcome.run_id, "test_cost")
    assert (test_cost.step, test_cost.value) == (90, outcome.result.test_cost)
    metrics = run.data.metrics
    assert metrics["test_accuracy"] == outcome.result.test_accuracy > 0.8
    assert metrics["val_accuracy"] == outcome.result.val_accuracy > 0.8
    assert set(metrics) == {
        "train_cost",
        "val_cost",
        "test_cost",
        "train_accuracy",
        "val_accuracy",
        "test_accuracy",
        "train_seconds",
    }

    artifacts = {a.path for a in client().list_artifacts(outcome.run_id)}
    assert artifacts == {"config.yaml", "cost_curve.png", "decision_boundary.png", "parameters.npz"}
    folder = download_artifacts(run_id=outcome.run_id, tracking_uri=uri, dst_path=str(tmp_path))
    recorded = yaml.safe_load(Path(folder, "config.yaml").read_text())
    assert recorded["model"]["width"] == 8 and recorded["tracking"]["experiment"] == "moons"
    with np.load(f"{folder}/parameters.npz", allow_pickle=False) as saved:
        assert sorted(saved) == ["W1", "W2", "W3", "b1", "b2", "b3"]
        np.testing.assert_array_equal(saved["W2"], outcome.result.parameters["W2"])
    assert len(run.inputs.dataset_inputs) == 1
    assert run.inputs.dataset_inputs[0].dataset.name == "moons"


def test_no_decision_boundary_for_more_than_two_features(compose_config, store):
    uri, client = store
    cfg = compose_config(f"tracking.uri={uri}", "dataset=iris", "train=quick")
    outcome = run_job(cfg)
    artifacts = {a.path for a in client().list_artifacts(outcome.run_id)}
    assert "decision_boundary.png" not in artifacts and "cost_curve.png" in artifacts
    assert client().get_run(outcome.run_id).data.params["layer_dims"] == "[4, 16, 16, 3]"


def test_diverging_job_ends_failed_with_its_reason(compose_config, store):
    uri, client = store
    cfg = compose_config(
        f"tracking.uri={uri}",
        "model.depth=3",
        "model.width=64",
        "train.learning_rate=30",
        "train.log_every=1",
    )
    outcome = run_job(cfg)
    run = client().get_run(outcome.run_id)
    assert outcome.status == run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("diverged: cost not finite at iteration")
    assert "test_accuracy" not in run.data.metrics and "test_cost" not in run.data.metrics
    # its points up to the divergence are in the store
    history = client().get_metric_history(outcome.run_id, "train_cost")
    assert [m.step for m in history] == list(range(outcome.result.diverged_at)) != []


def test_early_stopping_job_records_where_it_stopped_and_reproduces(compose_config, store):
    uri, client = store
    overrides = [f"tracking.uri={uri}", *EARLY_STOPPING, "train.iterations=2000"]
    outcome = run_job(compose_config(*overrides))
    r, run_id = outcome.result, outcome.run_id
    metrics = client().get_run(run_id).data.metrics
    assert outcome.status == "FINISHED" and r.stopped_at < 2000
    assert (metrics["stopped_at"], metrics["best_iteration"]) == (r.stopped_at, r.best_iteration)
    val = client().get_metric_history(run_id, "val_cost")
    assert val[-1].step == r.stopped_at  # the curves end where it stopped
    best = min(val, key=lambda m: m.value)
    assert best.step == r.best_iteration
    # the final metrics are those of the restored parameters, at the best point's step
    (test_cost,) = client().get_metric_history(run_id, "test_cost")
    assert test_cost.step == r.best_iteration and metrics["val_accuracy"] == r.val_accuracy
    again = run_job(compose_config(*overrides))
    for key in ("train_cost", "val_cost", "test_cost"):
        a = [(m.step, m.value) for m in client().get_metric_history(run_id, key)]
        b = [(m.step, m.value) for m in client().get_metric_history(again.run_id, key)]
        assert a == b


def test_bad_value_leaves_nothing_in_the_store(compose_config, new_store, tmp_path):
    uri, _ = new_store
    with pytest.raises(ConfigError, match=r"model\.width=0"):
        run_job(compose_config(f"tracking.uri={uri}", "model.width=0"))
    assert not (tmp_path / "store").exists()
