"""make server: a real `mlflow server` on a loopback port; a parallel sweep, reproduce and report
against it, and everything read back over the server's REST API."""

import json
import os
import signal
import subprocess

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from tests.helpers import ROOT, fetch, free_port, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    """``make server`` on a free port with its store in tmp_path; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        ["make", "-s", "server", f"PORT={port}", f"ARTIFACTS={tmp_path / 'artifacts'}",
         f"BACKEND_URI=sqlite:///{tmp_path / 'server' / 'mlflow.db'}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        first_line = process.stdout.readline()  # printed once the server answers
        assert first_line.startswith(f"MLflow tracking server on {base}"), first_line
        ui = f"{base}/#/experiments?workflowType=machine_learning"
        assert ui in process.stdout.readline()
        assert fetch(f"{base}/health", timeout=10) == b"OK"
        yield base, port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def api(base, path, body=None):
    return json.loads(fetch(f"{base}/api/2.0/mlflow/{path}", body))


def test_sweep_reproduce_and_report_against_a_tracking_server(server, tmp_path):
    base, port = server
    done = run_cli(
        "pipeline.train", "-m", "sweep=default", "tracking=server", "train=quick",
        "model.depth=1,2", "model.width=4", "train.learning_rate=0.5", "hydra.launcher.n_jobs=2",
        cwd=tmp_path, env={"PORT": str(port)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    experiment = api(base, "experiments/get-by-name?experiment_name=moons")["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:")  # proxied
    runs = api(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags, strict=True) if MLFLOW_PARENT_RUN_ID not in t]
    children = [r for r, t in zip(runs, tags, strict=True) if MLFLOW_PARENT_RUN_ID in t]
    assert len(parents) == 1 and len(children) == 2
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    for child in children:
        run_id = child["info"]["run_id"]
        history = api(base, f"metrics/get-history?run_id={run_id}&metric_key=train_cost")
        assert [m["step"] for m in history["metrics"]] == list(range(0, 201, 2))
        files = {f["path"] for f in api(base, f"artifacts/list?run_id={run_id}")["files"]}
        assert files == {"config.yaml", "cost_curve.png", "decision_boundary.png", "parameters.npz"}
        png = fetch(f"{base}/get-artifact?path=cost_curve.png&run_uuid={run_id}")
        assert png.startswith(b"\x89PNG")

    env = {"MLFLOW_TRACKING_URI": base}
    resumed = run_cli("pipeline.train", "-m", "--resume", "latest", "tracking=server",
                      cwd=tmp_path, env={"PORT": str(port)})  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # its job list, read over REST
    assert "2 jobs, 2 finished, 0 to run" in resumed.stdout
    again = run_cli("pipeline.reproduce", children[0]["info"]["run_id"], cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "identical" in again.stdout
    report = run_cli("pipeline.report", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    parent_id = parents[0]["info"]["run_id"]
    listed = api(base, f"artifacts/list?run_id={parent_id}&path=report")["files"]
    assert {f["path"] for f in listed} == {
        "report/accuracy_heatmap.png", "report/cost_curves.png", "report/runs.csv",
        "report/runs.md",
    }  # fmt: skip
