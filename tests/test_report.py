"""make report: one row per job with the runs' own values, plots, and the parent's artifacts."""

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.job import run_job
from tests.helpers import parents_and_children, run_cli

pytestmark = pytest.mark.slow
FILES = ["accuracy_heatmap.png", "cost_curves.png", "runs.csv", "runs.md"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 2 x 2 sweep with one diverging job, in a fresh store."""
    folder = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{folder / 'store' / 'mlflow.db'}"
    done = run_cli(
        "pipeline.train", "-m", "sweep=default", f"tracking.uri={uri}", "train.iterations=60",
        "train.log_every=5", "model.depth=1,3", "model.width=64", "train.learning_rate=0.1,10",
        "hydra.launcher.n_jobs=2", cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, uri


def report(uri, *args, cwd):
    return run_cli("pipeline.report", *args, cwd=cwd, env={"MLFLOW_TRACKING_URI": uri})


def test_report_of_the_latest_sweep(swept):
    folder, uri = swept
    done = report(uri, cwd=folder)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    (parent,), children = parents_and_children(client)
    children = {r.info.run_name: r for r in children}
    out = folder / "reports" / parent.info.run_name
    assert sorted(p.name for p in out.iterdir()) == FILES

    table = pd.read_csv(out / "runs.csv")
    assert sorted(table.run) == sorted(children) and len(table) == 4
    for row in table.itertuples():
        child = children[row.run]
        assert row.status == child.info.status
        assert (row.depth, row.width) == (int(child.data.params["model.depth"]), 64)
        assert row.learning_rate == float(child.data.params["train.learning_rate"])
        assert row.train_cost == child.data.metrics["train_cost"]
        if row.status == "FINISHED":
            assert row.test_accuracy == child.data.metrics["test_accuracy"]
    assert table.test_accuracy.iloc[0] == table.test_accuracy.max()  # best first
    assert "FAILED" in set(table.status)  # d3-w64-lr10 diverges and is still reported
    assert (out / "runs.md").read_text().startswith("| run | status | depth |")
    assert (out / "cost_curves.png").read_bytes().startswith(b"\x89PNG")

    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {f"report/{name}" for name in FILES}
    n_finished = sum(c.info.status == "FINISHED" for c in children.values())
    assert n_finished < 4  # the diverged job is not counted as finished
    counts = f"{parent.info.run_name}: 4 runs, {n_finished} finished, {4 - n_finished} failed"
    assert counts in done.stdout


def test_report_of_a_single_run_and_of_an_experiment(compose_config, store, tmp_path):
    uri, _ = store
    outcome = run_job(compose_config(f"tracking.uri={uri}", "train=quick"))
    single = report(uri, "--run", outcome.run_id, "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    assert len(pd.read_csv(tmp_path / "r" / "d2-w16-lr0.1" / "runs.csv")) == 1
    whole = report(uri, "--experiment", "moons", "--out", str(tmp_path / "e"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert sorted(p.name for p in (tmp_path / "e" / "moons").iterdir()) == FILES


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "feedbeef"], "error: run 'feedbeef' not found"),
        (["--experiment", "nope"], "error: no experiment named 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line(swept, args, message):
    folder, uri = swept
    done = report(uri, *args, cwd=folder)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message) and len(done.stderr.strip().splitlines()) == 1
