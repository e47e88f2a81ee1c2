"""make register: the best network of a sweep as an MLflow model in the registry, loaded back
through ``models:/<name>@champion`` and compared with pipeline.nn on the run's own
parameters.npz, bit for bit; bad input registers nothing. Real SQLite store, real CLIs."""

import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from pipeline import register as register_command
from pipeline.job import data as datasets
from pipeline.job.recorded import recorded_config
from pipeline.nn import L_model_forward, predict
from tests.helpers import ROOT, TWO_JOBS, call_main, parents_and_children, run_cli

pytestmark = pytest.mark.slow


def versions(client):
    return client.search_model_versions()


def test_register_best_then_predict_as_pipeline_nn_does(store, tmp_path, monkeypatch):
    uri, client = store
    one = "hydra.launcher.n_jobs=1"  # what is tested is the registered model, not the sweep
    swept = run_cli("pipeline.train", "-m", *TWO_JOBS, one, f"tracking.uri={uri}", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr[-2000:]
    (parent,), _ = parents_and_children(client())
    best = parent.data.tags["best_run_id"]

    done = subprocess.run(
        ["make", "-s", "register", "RUN=best", f"ARGS=--tracking-uri {uri}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"registered moons version 1 (champion) from run {best}")
    (version,) = versions(client())
    assert (version.name, str(version.version), version.run_id) == ("moons", "1", best)
    assert str(client().get_model_version_by_alias("moons", "champion").version) == "1"

    # the run's own network and data, scaled as training scaled them
    with np.load(client().download_artifacts(best, "parameters.npz", str(tmp_path))) as stored:
        parameters = dict(stored)
    cfg, _ = recorded_config(client(), best)
    x_test = datasets.split(cfg.dataset, seed=cfg.seed)[2]  # (train, val, test, ...)
    X_test = datasets.load(cfg.dataset, seed=cfg.seed).X_test
    activation = client().get_run(best).data.params["model.activation"]
    AL, _ = L_model_forward(X_test, parameters, hidden_activation=activation)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/moons@champion")
    out = model.predict(pd.DataFrame(x_test, columns=["x0", "x1"]))
    assert list(out.columns) == ["p0", "p1", "label"]
    assert np.array_equal(
        out.label.to_numpy(), predict(X_test, parameters, hidden_activation=activation)[0]
    )
    assert np.array_equal(out.p1.to_numpy(), AL[0]) and np.array_equal(out.p0, 1 - AL[0])
    assert 0 < out.label.mean() < 1  # both classes predicted: a real network, not a constant
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["x0", "x1"]
    assert signature.outputs.input_names() == ["p0", "p1", "label"]
    refused_as_a_missing_column_is(model, x_test[:4])


def refused_as_a_missing_column_is(model, x) -> None:
    """NaN, None or infinite features gave NaN probabilities and label 0, silently: they are
    refused as MLflow's schema enforcement refuses a missing column, naming where they are."""
    with pytest.raises(MlflowException) as missing:
        model.predict(pd.DataFrame(x[:, :1], columns=["x0"]))
    assert "Model is missing inputs ['x1']" in missing.value.message  # MLflow's own refusal
    for bad in (np.nan, np.inf, None):
        frame = pd.DataFrame(x, columns=["x0", "x1"])  # None: NaN in a float column
        frame.loc[2, "x1"] = bad
        with pytest.raises(MlflowException) as refused:
            model.predict(frame)
        assert refused.value.error_code == missing.value.error_code
        assert "x1" in refused.value.message and "row 2" in refused.value.message
        assert "finite" in refused.value.message


def test_bad_input_is_one_line_and_registers_nothing(store, tmp_path, capfd):
    uri, client = store
    experiment = client().create_experiment("moons")
    failed = client().create_run(experiment).info.run_id  # a network, but FAILED
    np.savez(tmp_path / "parameters.npz", W1=np.ones((1, 2)), b1=np.zeros((1, 1)))
    client().log_artifact(failed, str(tmp_path / "parameters.npz"))
    client().set_terminated(failed, "FAILED")
    empty = client().create_run(experiment).info.run_id  # FINISHED, no network
    client().set_terminated(empty, "FINISHED")

    for run, message in [
        ("feedbeef", "error: run 'feedbeef' not found in sqlite:///"),
        (failed, f"error: run {failed} is FAILED: only a FINISHED run's network is registered"),
        (empty, f"error: run {empty} has no parameters.npz"),
    ]:
        done = call_main(capfd, register_command.main, run, "--tracking-uri", uri, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not versions(client()) and not client().search_registered_models()
    for run in (failed, empty):
        assert "model" not in {f.path for f in client().list_artifacts(run)}
    unset = subprocess.run(["make", "-s", "register"], cwd=ROOT, capture_output=True, text=True)
    assert unset.returncode == 2 and unset.stderr.startswith("error: RUN is not set")
