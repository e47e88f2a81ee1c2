"""make server: a real `mlflow server` on a loopback port, its store on SQLite or on a real
PostgreSQL; a parallel sweep, reproduce and report against it, everything read back over the
server's REST API; on PostgreSQL also a killed sweep resumed, and 8 processes writing 100 jobs."""

import collections
import json
import os

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipeline import report as report_command
from pipeline import reproduce, train
from tests.helpers import TWO_JOBS, call_main, fetch, parents_and_children, run_cli, wait_until
from tests.test_report import assert_report_files
from tests.test_sweep_survives import start, started, statuses

pytestmark = pytest.mark.slow


def api(base, path, body=None):
    return json.loads(fetch(f"{base}/api/2.0/mlflow/{path}", body))


def test_sweep_reproduce_and_report_against_a_tracking_server(server, tmp_path, capfd):
    """The sweep runs in processes of its own; the resume, reproduction and report are each
    command's main(argv), in this process."""
    base, port, log = server
    done = run_cli(
        "pipeline.train",
        "-m",
        *TWO_JOBS,
        "tracking=server",
        "tracking.experiment=reproduced",
        cwd=tmp_path,
        env={"PORT": str(port)},
    )
    assert done.returncode == 0, done.stderr[-3000:]

    experiment = api(base, "experiments/get-by-name?experiment_name=reproduced")["experiment"]
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
    resume = ["-m", "--resume", "latest", "tracking=server"]
    resumed = call_main(capfd, train.main, *resume, cwd=tmp_path, env={"PORT": str(port)})
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # its job list, read over REST
    assert "2 jobs, 2 finished, 0 to run" in resumed.stdout
    again = call_main(capfd, reproduce.main, children[0]["info"]["run_id"], cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "identical" in again.stdout
    report = call_main(capfd, report_command.main, cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    parent_id = parents[0]["info"]["run_id"]
    listed = api(base, f"artifacts/list?run_id={parent_id}&path=report")["files"]
    assert_report_files(f["path"].removeprefix("report/") for f in listed)
    assert not errors_in(log)


def errors_in(log) -> list[str]:
    """The lines of a server's log that tell of an error (a traceback, an ERROR record)."""
    return [line for line in log.read_text().splitlines() if "Traceback" in line or "ERROR" in line]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_killed_sweep_resumes_through_a_server_on_postgresql(server, tmp_path):
    base, _, log = server
    client = MlflowClient(base)
    launcher = start(base, tmp_path, "tracking.experiment=killed")
    wait_until(lambda: started(tmp_path) and statuses(client, "killed")["FINISHED"] >= 3)
    launcher.kill()  # kill -9: its loky workers end their runs KILLED on their own
    launcher.wait()
    wait_until(lambda: not statuses(client, "killed")["RUNNING"], timeout=30)
    finished = {
        c.data.tags["config_digest"]
        for c in parents_and_children(client, "killed")[1]
        if c.info.status == "FINISHED"
    }
    assert 3 <= len(finished) < 12

    done = run_cli(
        "pipeline.train", "-m", "--resume", "latest", f"tracking.uri={base}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"12 jobs, {len(finished)} finished, {12 - len(finished)} to run" in done.stdout
    (parent,), children = parents_and_children(client, "killed")
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 12
    per_config = collections.Counter(
        c.data.tags["config_digest"] for c in children if c.info.status == "FINISHED"
    )
    assert len(per_config) == 12 and set(per_config.values()) == {1}  # each config once
    assert not errors_in(log)


# 100 quick jobs, 8 at a time: 2 depths x 5 widths x 10 learning rates, 101 points a curve.
LOAD = [
    "sweep=default",
    "train=quick",
    "model.depth=1,2",
    "model.width=2,4,8,16,32",
    "train.learning_rate=0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
    "hydra.launcher.n_jobs=8",
]


@pytest.mark.skipif(
    not os.environ.get("BACKPROP_LAB_LOAD_TEST"),
    reason="the 100-job load test takes minutes: make test-load runs it",
)
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("auth", [False, True], indirect=True, ids=["open", "basic-auth"])
def test_eight_processes_write_100_jobs_to_a_server_on_postgresql(server, tmp_path):
    base, _, log = server
    # ~1 min on an idle 2-core machine; the timeout leaves room for a machine others share
    done = run_cli(
        "pipeline.train",
        "-m",
        f"tracking.uri={base}",
        *LOAD,
        "tracking.experiment=load",
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(*[line for line in done.stdout.splitlines() if line.startswith("sweep done")])  # -s
    client = MlflowClient(base)
    (parent,), children = parents_and_children(client, "load")
    assert len(children) == 100
    assert {r.info.status for r in [parent, *children]} == {"FINISHED"}
    for child in children:  # no point lost
        for key in ("train_cost", "val_cost"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == list(range(0, 201, 2)), (child.info.run_name, key)
    assert not errors_in(log)
