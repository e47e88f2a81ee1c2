"""make ui: a real `mlflow ui` process on 127.0.0.1 serving the runs and their artifacts."""

import json

import psutil
import pytest

from pipeline.job.run import run_job
from tests.helpers import fetch, ui_process

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("frozen", [False, True], ids=["writable", "read_only"])
def test_ui_serves_the_store_and_points_at_the_runs_table(
    compose_config, store, tmp_path, read_only, frozen
):
    """Also a read-only store (archived, shared), which was refused: "cannot be written"."""
    uri, _ = store
    outcome = run_job(compose_config(f"tracking.uri={uri}", "train=quick"))
    if frozen:
        read_only(tmp_path / "store")
    with ui_process(uri, tmp_path) as (process, port):
        first_line = process.stdout.readline().decode()
        base = f"http://127.0.0.1:{port}"
        runs_table = f"{base}/#/experiments/{outcome.experiment_id}/runs"
        assert f"{runs_table}?workflowType=machine_learning" in first_line  # "Model training"
        assert b"<html" in fetch(base)[:1000].lower()
        search = {"experiment_ids": [outcome.experiment_id]}
        runs = json.loads(fetch(f"{base}/api/2.0/mlflow/runs/search", search))
        assert [r["info"]["run_id"] for r in runs["runs"]] == [outcome.run_id]
        png = fetch(f"{base}/get-artifact?path=cost_curve.png&run_uuid={outcome.run_id}")
        assert png.startswith(b"\x89PNG")
        # MLflow's job runner and its Huey consumers (GenAI jobs) are not started: 4 processes
        started = [" ".join(p.cmdline()) for p in psutil.Process(process.pid).children(True)]
        assert not [c for c in started if "huey" in c or "jobs._job_runner" in c], started
