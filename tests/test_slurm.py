"""hydra/launcher=slurm on a real single-node Slurm (tests/slurm_cluster.py: Debian's slurm-wlm,
munge, and accounting through slurmdbd on MariaDB, all on 127.0.0.1), against a real
`make server`. `make test-slurm` runs these (they install the packages if missing): marked
``slurm``, `make test` leaves them out. Skipped only where the machine is not root or has no
Debian packages."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest
from mlflow import MlflowClient

from pipeline.processes import slurm as slurm_reasons
from tests import slurm_cluster
from tests.helpers import ROOT, parents_and_children, run_cli
from tests.test_server import errors_in
from tests.test_sweep_survives import started

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SLURM = [
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={slurm_cluster.PARTITION}",
    "hydra.launcher.mem_gb=1",
]
TWO_JOBS = [
    "sweep=default",
    "train=quick",
    "model.depth=1,2",
    "model.width=4",
    "train.learning_rate=0.5",
]


@pytest.fixture(scope="module")
def slurm():
    """A running cluster with accounting, for the module's tests."""
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster.slurm_cluster() as cluster:
        yield cluster


def sweep_env(cluster: slurm_cluster.Cluster, **extra: str) -> dict[str, str]:
    """The launcher's environment, which its Slurm jobs get too (sbatch's --export=ALL): the
    cluster's SLURM_CONF, and this worktree's pipeline, wherever the venv's install points."""
    return cluster.env | {"PYTHONPATH": str(ROOT)} | extra


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_sweep_runs_as_slurm_jobs_against_a_tracking_server(slurm, server, tmp_path):
    base, port, log = server
    env = sweep_env(slurm, PORT=str(port))
    done = run_cli(
        "pipeline.train", "-m", *TWO_JOBS, *SLURM, "tracking=server", cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep done in" in done.stdout and ": 2 finished" in done.stdout, done.stdout

    client = MlflowClient(base)
    (parent,), children = parents_and_children(client)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs_finished"] == 2
    assert parent.data.metrics["jobs_failed"] == 0
    assert "2 jobs, 2 finished" in parent.data.tags["mlflow.note.content"]
    assert sorted(c.info.run_name for c in children) == ["d1-w4-lr0.5", "d2-w4-lr0.5"]
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("train_cost", "val_cost"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == list(range(0, 201, 2)), (child.info.run_name, key)
    # the jobs ran as Slurm jobs of this cluster (an array of 2), which its accounting knows
    accounted = slurm.run(
        "sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State"
    ).stdout.split()
    assert len(accounted) == 2 and all(line.endswith("|COMPLETED") for line in accounted)
    assert not errors_in(log)


# Two jobs of minutes (30000 iterations): long enough to stop one while it trains.
LONG_JOBS = [
    "sweep=default",
    "model.depth=3",
    "model.width=64",
    "train.learning_rate=0.1,0.2",
    "train.iterations=30000",
    "train.log_every=100",
]


def start_sweep(cluster, tmp_path, *args: str) -> subprocess.Popen:
    """A sweep on the cluster, in a process group of its own, with a SQLite store in
    tmp_path; its stdout and stderr go to out.txt and err.txt there."""
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        "-m",
        *SLURM,
        f"tracking.uri=sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
        *args,
    ]
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        return subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
            env=os.environ | sweep_env(cluster),
            start_new_session=True,
        )


def running_children(tmp_path) -> list:
    """The sweep's children RUNNING in its store, once its launcher has created the parent."""
    if not started(tmp_path):
        return []
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    return [r for r in parents_and_children(client)[1] if r.info.status == "RUNNING"]


def wait_for_store(condition, what: str) -> None:
    """Until ``condition()``, asked of the jobs' SQLite store once a second (more often, it
    would hold the store's lock against the jobs' writes)."""
    slurm_cluster.wait_until(condition, 300, what, every=1.0)


def slurm_job_of(cluster, run) -> str:
    """The Slurm job (e.g. ``12_1``) whose process trains ``run``: its worker_pid's job."""
    pid = run.data.tags["worker_pid"]
    environ = psutil.Process(int(pid)).environ()
    return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"


@contextlib.contextmanager
def ended(launcher: subprocess.Popen, cluster) -> Iterator[None]:
    """At the end: the launcher stopped (SIGKILL if it still runs) and the queue empty, so
    that the next test finds an idle cluster."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=60)
        cluster.run("scancel", f"--partition={slurm_cluster.PARTITION}")
        slurm_cluster.wait_until(lambda: not cluster.queue(), 120, "an empty queue", cluster)


def test_a_job_cancelled_with_scancel_ends_killed_saying_so(slurm, tmp_path):
    launcher = start_sweep(slurm, tmp_path, *LONG_JOBS)
    with ended(launcher, slurm):
        wait_for_store(lambda: len(running_children(tmp_path)) == 2, "both runs to start")
        cancelled = running_children(tmp_path)[0]
        client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
        wait_for_store(
            lambda: client.get_metric_history(cancelled.info.run_id, "train_cost"),
            "the run's first points",
        )
        slurm.run("scancel", slurm_job_of(slurm, cancelled))
        wait_for_store(
            lambda: client.get_run(cancelled.info.run_id).info.status != "RUNNING",
            "the cancelled run to end",
        )
        run = client.get_run(cancelled.info.run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags.get("killed_reason") == slurm_reasons.CANCELLED
        assert client.get_metric_history(run.info.run_id, "train_cost")  # its points kept


def test_a_job_over_its_time_limit_ends_killed_by_slurms_sigterm_with_its_points(slurm, tmp_path):
    # one job of hours, in a 1-minute limit: Slurm's SIGTERM comes at about 1 min
    launcher = start_sweep(
        slurm,
        tmp_path,
        *LONG_JOBS[:3],
        "train.learning_rate=0.1",
        "train.iterations=10000000",
        "hydra.launcher.timeout_min=1",
    )
    with ended(launcher, slurm):
        wait_for_store(lambda: len(running_children(tmp_path)) == 1, "the run to start")
        (job,) = running_children(tmp_path)
        client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
        wait_for_store(
            lambda: client.get_run(job.info.run_id).info.status != "RUNNING", "the run to end"
        )
        run = client.get_run(job.info.run_id)
        assert run.info.status == "KILLED", run.data.tags.get("failure_reason")
        assert run.data.tags.get("killed_reason") == slurm_reasons.TIME_LIMIT
        assert client.get_metric_history(run.info.run_id, "train_cost")  # its points kept
