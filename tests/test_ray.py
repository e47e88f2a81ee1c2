"""hydra/launcher=ray_cluster: a sweep on a real Ray cluster, a Ray head of 2 CPUs bound to
127.0.0.1, against a real `make server`; each job runs in a Ray worker, which has not the
launcher's environment, and still reaches the sweep's parent run. Skipped without the ray extra
(`make test-ray` installs it and runs these)."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

from mlflow import MlflowClient

from tests.helpers import (
    assert_one_error_line,
    free_port,
    parents_and_children,
    run_cli,
    wait_until,
)
from tests.test_server import errors_in
from tests.test_sweep_survives import started, statuses

pytestmark = pytest.mark.slow

# Ray on this machine only: no usage stats; 127.0.0.1 kept as the node's address, which Ray
# otherwise replaces with the machine's network address (this switch is its single-machine
# mode, as on macOS); a stop without the 30 s drain meant for a cluster's running services.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
}
SWEEP = [
    "sweep=default",
    "hydra/launcher=ray_cluster",
    "train=quick",
    "model.depth=1,2",
    "model.width=4,8",
    "train.learning_rate=0.5",
]


@pytest.fixture(scope="session")  # once in an xdist worker, whichever tests it runs between
def ray_head(tmp_path_factory):
    """``ray start --head --block`` with 2 CPUs on 127.0.0.1 and a free port, in a process group
    of its own, without the launcher's variables; yields its address and the folder of its
    logs. Stopped at the session's end, even when a test fails."""
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # its sockets' paths stay short
    port = free_port()
    cwd = tmp_path_factory.mktemp("ray-node")  # where its workers write their Hydra folders
    log = cwd / "ray.log"
    ray = Path(sys.executable).with_name("ray")
    environment = {k: v for k, v in os.environ.items() if k not in ("PORT", "MLFLOW_TRACKING_URI")}
    with open(log, "w") as out:
        head = subprocess.Popen(
            [
                ray,
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--num-cpus=2",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={folder}",
            ],
            cwd=cwd,
            env=environment | RAY_ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "Ray runtime started" in log.read_text() or head.poll() is not None, 120)
        assert head.poll() is None, log.read_text()[-3000:]
        yield f"127.0.0.1:{port}", folder / "session_latest" / "logs"
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of its group is left
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_sweep_runs_on_a_ray_cluster_against_a_tracking_server(ray_head, server, tmp_path):
    address, ray_logs = ray_head
    base, port, log = server
    env = RAY_ENV | {"RAY_ADDRESS": address, "PORT": str(port)}
    done = run_cli(
        "pipeline.train",
        "-m",
        *SWEEP,
        "tracking=server",
        "tracking.experiment=ray",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for number in range(1, 5):  # Ray's workers' lines, each printed (not folded into one)
        assert f"[job {number}/4]" in done.stdout, done.stdout

    client = MlflowClient(base)
    (parent,), children = parents_and_children(client, "ray")  # the session's server: its own
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 4
    assert len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["tracking.uri"] == base  # the parent's, not the worker's $PORT
        for key in ("train_cost", "val_cost"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == list(range(0, 201, 2)), (child.info.run_name, key)
    # each job ran in one of the cluster's worker processes: Ray names their logs by pid
    worker_pids = {
        name.rpartition("-")[2].split(".")[0]
        for name in os.listdir(ray_logs)
        if name.startswith("worker-")
    }
    assert {c.data.tags["worker_pid"] for c in children} <= worker_pids
    assert not errors_in(log)


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({}, "hydra/launcher=ray_cluster needs the Ray cluster's address: set RAY_ADDRESS="),
        (
            {"RAY_ADDRESS": "127.0.0.1:{port}"},
            "the Ray cluster at 127.0.0.1:{port} does not answer",
        ),
    ],
)
def test_a_ray_cluster_without_an_address_or_that_does_not_answer_is_one_line(
    given, fragment, new_store, tmp_path, monkeypatch
):
    uri, _ = new_store
    port = free_port()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # run_cli passes this environment on
    env = {k: v.format(port=port) for k, v in given.items()}
    done = run_cli("pipeline.train", "-m", *SWEEP, f"tracking.uri={uri}", cwd=tmp_path, env=env)
    assert_one_error_line(done, fragment.format(port=port))
    assert not (tmp_path / "store").exists()  # no parent run, nor even a store


def test_sigterm_ends_a_sweep_on_ray_killed_without_a_traceback(ray_head, store, tmp_path):
    address, _ = ray_head
    uri, client = store
    two_long_jobs = [
        "model.depth=3",
        "model.width=64",
        "train.learning_rate=0.1,0.2",
        "train.iterations=30000",
        "train.log_every=100",
    ]
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        "-m",
        *SWEEP,
        *two_long_jobs,
        f"tracking.uri={uri}",
    ]
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        launcher = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env=os.environ | RAY_ENV | {"RAY_ADDRESS": address},
        )
    try:
        wait_until(lambda: started(tmp_path) and statuses(client())["RUNNING"] == 2)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        launcher.kill()
    assert "Traceback" not in (tmp_path / "err.txt").read_text()
    (parent,), children = parents_and_children(client())
    assert parent.info.status == "KILLED" and len(children) == 2
    for child in children:  # ended by the launcher, with the points of their last batch
        assert child.info.status == "KILLED"
        assert client().get_metric_history(child.info.run_id, "train_cost")
