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

SLURM = ["hydra/launcher=slurm", f"hydra.launcher.partition={slurm_cluster.PARTITION}",
         "hydra.launcher.mem_gb=1"]  # fmt: skip
TWO_JOBS = ["sweep=default", "train=quick", "model.depth=1,2", "model.width=4",
            "train.learning_rate=0.5"]  # fmt: skip


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
    done = run_cli("pipeline.train", "-m", *TWO_JOBS, *SLURM, "tracking=server", cwd=tmp_path,
                   env=env)  # fmt: skip
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
    accounted = slurm.run("sacct", "--noheader", "--parsable2", "--allocations",
                          "--format=JobID,State").stdout.split()  # fmt: skip
    assert len(accounted) == 2 and all(line.endswith("|COMPLETED") for line in accounted)
    assert not errors_in(log)


# Two jobs of minutes (30000 iterations): long enough to stop one while it trains.
LONG_JOBS = ["sweep=default", "model.depth=3", "model.width=64", "train.learning_rate=0.1,0.2",
             "train.iterations=30000", "train.log_every=100"]  # fmt: skip
# A job of minutes beside one of seconds (whose run has the same name): the sweep goes on.
LONG_AND_SHORT = [*LONG_JOBS[:3], "train.learning_rate=0.1", "train.iterations=300,30000",
                  "train.log_every=100"]  # fmt: skip


def start_sweep(cluster, tmp_path, *args: str, make: bool = False) -> subprocess.Popen:
    """A sweep on the cluster, in a process group of its own, with a SQLite store in
    tmp_path; its stdout and stderr go to out.txt and err.txt there (appended). With
    ``make``: through ``make sweep``, ``args`` its ARGS."""
    own = [*SLURM, f"tracking.uri=sqlite:///{tmp_path / 'store' / 'mlflow.db'}"]
    command = [sys.executable, "-m", "pipeline.train", "-m", *own, *args]
    if make:
        words = [*own, f"hydra.sweep.dir={tmp_path / 'multirun'}"]
        command = ["make", "-s", "-C", str(ROOT), "sweep", f"ARGS={' '.join(words)}", *args]
    with open(tmp_path / "out.txt", "a") as out, open(tmp_path / "err.txt", "a") as err:
        return subprocess.Popen(
            command, cwd=tmp_path, stdout=out, stderr=err, env=os.environ | sweep_env(cluster),
            start_new_session=True,
        )  # fmt: skip


def store_client(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")


def running_children(tmp_path) -> list:
    """The sweep's children RUNNING in its store, once its launcher has created the parent."""
    if not started(tmp_path, "out.txt"):
        return []
    return [r for r in parents_and_children(store_client(tmp_path))[1]
            if r.info.status == "RUNNING"]  # fmt: skip


def wait_for_store(condition, what: str) -> None:
    """Until ``condition()``, asked of the jobs' SQLite store once a second (more often, it
    would hold the store's lock against the jobs' writes)."""
    slurm_cluster.wait_until(condition, 300, what, every=1.0)


def slurm_job_of(cluster, run) -> str:
    """The Slurm job (e.g. ``12_1``) whose process trains ``run``: its worker_pid's job."""
    pid = run.data.tags["worker_pid"]
    environ = psutil.Process(int(pid)).environ()
    if "SLURM_ARRAY_JOB_ID" not in environ:  # a sweep of one job: no array
        return environ["SLURM_JOB_ID"]
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


def cancel_once_training(cluster, tmp_path, iterations: str = "30000"):
    """Once the run of ``iterations`` trains and has sent points, ``scancel`` its Slurm job;
    then until its run has ended. The run, as it ended."""

    def long_run():
        runs = running_children(tmp_path)
        return next((r for r in runs if r.data.params["train.iterations"] == iterations), None)

    wait_for_store(long_run, "the long run to start")
    run_id = long_run().info.run_id
    client = store_client(tmp_path)
    wait_for_store(lambda: client.get_metric_history(run_id, "train_cost"), "its first points")
    cluster.run("scancel", slurm_job_of(cluster, client.get_run(run_id)))
    wait_for_store(lambda: client.get_run(run_id).info.status != "RUNNING", "the run to end")
    return client.get_run(run_id)


def assert_clean_end(launcher: subprocess.Popen, tmp_path, code: int = 0) -> tuple[str, str]:
    """The launcher ends by itself with ``code``, without a traceback nor submitit's
    warnings; its (stdout, stderr)."""
    assert launcher.wait(timeout=120) == code, (tmp_path / "err.txt").read_text()[-3000:]
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert "Traceback" not in err and "Bypassing" not in err, err[-3000:]
    return out, err


def test_a_cancelled_job_ends_killed_the_sweep_goes_on_and_a_resume_runs_it_alone(slurm, tmp_path):
    launcher = start_sweep(slurm, tmp_path, *LONG_AND_SHORT)
    with ended(launcher, slurm):
        run = cancel_once_training(slurm, tmp_path)
        assert run.info.status == "KILLED"
        assert run.data.tags.get("killed_reason") == slurm_reasons.CANCELLED
        client = store_client(tmp_path)
        assert client.get_metric_history(run.info.run_id, "train_cost")  # its points kept

        # the sweep goes on: the other job finishes, the parent ends with the counts
        out, _ = assert_clean_end(launcher, tmp_path)
        assert "sweep done in" in out and ": 1 finished, 1 killed" in out, out
        assert out.count(slurm_reasons.CANCELLED) == 1, out  # one line for the cancelled job
        (parent,), children = parents_and_children(client)
        assert parent.info.status == "FINISHED"
        assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED"]

    # make sweep RESUME=latest runs the cancelled job alone: one Slurm job, its config's run
    resumed = start_sweep(slurm, tmp_path, "RESUME=latest", make=True)
    with ended(resumed, slurm):
        digest = run.data.tags["config_digest"]

        def rerun():
            runs = running_children(tmp_path)
            return [r for r in runs if r.data.tags["config_digest"] == digest]

        wait_for_store(rerun, "the cancelled job to run again")
        out = (tmp_path / "out.txt").read_text()
        assert "2 jobs, 1 finished, 1 to run" in out, out
        # the finished job's Slurm job returns at once, without a run: that job trains alone
        slurm_cluster.wait_until(lambda: len(slurm.queue()) == 1, 120, "one job left", slurm)
        children = parents_and_children(client)[1]
        assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED", "RUNNING"]


def test_a_job_over_its_time_limit_ends_killed_by_slurms_sigterm_with_its_points(slurm, tmp_path):
    # one job of hours, in a 1-minute limit: Slurm's SIGTERM comes at about 1 min
    launcher = start_sweep(slurm, tmp_path, *LONG_JOBS[:3], "train.learning_rate=0.1",
                           "train.iterations=10000000", "hydra.launcher.timeout_min=1")  # fmt: skip
    with ended(launcher, slurm):
        wait_for_store(lambda: len(running_children(tmp_path)) == 1, "the run to start")
        (job,) = running_children(tmp_path)
        client = store_client(tmp_path)
        wait_for_store(lambda: client.get_run(job.info.run_id).info.status != "RUNNING",
                       "the run to end")  # fmt: skip
        run = client.get_run(job.info.run_id)
        assert run.info.status == "KILLED", run.data.tags.get("failure_reason")
        assert run.data.tags.get("killed_reason") == slurm_reasons.TIME_LIMIT
        assert client.get_metric_history(run.info.run_id, "train_cost")  # its points kept
        # the launcher learns of it and ends the sweep, its counts right
        out, _ = assert_clean_end(launcher, tmp_path)
        assert ": 0 finished, 1 killed" in out and slurm_reasons.TIME_LIMIT in out, out


def test_sigterm_to_the_launcher_cancels_its_slurm_jobs(slurm, tmp_path):
    launcher = start_sweep(slurm, tmp_path, *LONG_JOBS)
    with ended(launcher, slurm):
        wait_for_store(lambda: len(running_children(tmp_path)) == 2, "both runs to start")
        launcher.send_signal(signal.SIGTERM)
        assert_clean_end(launcher, tmp_path, code=143)
        assert not slurm.queue()  # nothing left running in Slurm
        (parent,), children = parents_and_children(store_client(tmp_path))
        assert parent.info.status == "KILLED"
        assert [c.info.status for c in children] == ["KILLED", "KILLED"]
        assert "sweep killed after" in (tmp_path / "out.txt").read_text()


@pytest.fixture
def slurm_without_accounting():
    """A cluster with no accounting: ``sacct`` fails, as on the issue's trial."""
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster.slurm_cluster(accounting=False) as cluster:
        yield cluster


def test_without_accounting_the_launcher_learns_a_jobs_end_from_the_queue(
    slurm_without_accounting, tmp_path
):
    cluster = slurm_without_accounting
    assert cluster.run("sacct", check=False).returncode != 0
    launcher = start_sweep(cluster, tmp_path, *LONG_JOBS[:3], "train.learning_rate=0.1",
                           *LONG_JOBS[4:])  # fmt: skip
    with ended(launcher, cluster):
        run = cancel_once_training(cluster, tmp_path)
        assert run.data.tags.get("killed_reason") == slurm_reasons.CANCELLED
        out, err = assert_clean_end(launcher, tmp_path)  # it never hangs
        assert ": 0 finished, 1 killed" in out, out
        warnings = [line for line in err.splitlines() if "sacct" in line]
        assert len(warnings) == 1 and warnings[0].startswith("warning: "), err[-3000:]
