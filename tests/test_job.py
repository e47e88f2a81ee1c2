"""One job into a real SQLite store in a temporary folder: params, curves, artifacts, status."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.artifacts import download_artifacts

from pipeline.config import ConfigError
from pipeline.job import run_job


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
    assert (params["n_train"], params["n_test"]) == ("750", "250")

    for key in ("train_cost", "test_cost"):
        history = client().get_metric_history(outcome.run_id, key)
        assert [m.step for m in history] == [*range(0, 90, 10), 90]
        assert [m.value for m in history] == getattr(outcome.result, key)
    metrics = run.data.metrics
    assert metrics["test_accuracy"] == outcome.result.test_accuracy > 0.8
    assert set(metrics) >= {"train_accuracy", "test_accuracy", "train_seconds"}

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
        f"tracking.uri={uri}", "model.depth=3", "model.width=64", "train.learning_rate=10"
    )
    outcome = run_job(cfg)
    run = client().get_run(outcome.run_id)
    assert outcome.status == run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("diverged: cost not finite at iteration")
    assert "test_accuracy" not in run.data.metrics


def test_bad_value_leaves_nothing_in_the_store(compose_config, store, tmp_path):
    uri, _ = store
    with pytest.raises(ConfigError, match=r"model\.width=0"):
        run_job(compose_config(f"tracking.uri={uri}", "model.width=0"))
    assert not (tmp_path / "store").exists()
