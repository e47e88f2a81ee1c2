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
from tests import helpers, slurm_cluster
from tests.helpers import ROOT, parents_and_children, run_cli
from tests.test_server import errors_in
from tests.test_sweep_survives import started

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SLURM = [
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={slurm_cluster.PARTITION}",
    "hydra.launcher.mem_gb=1",
]
# helpers.TWO_JOBS but joblib's worker count: Slurm's launcher has no such field
TWO_JOBS = [o for o in helpers.TWO_JOBS if not o.startswith("hydra.launcher.n_jobs=")]


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
# Three jobs of a 1-minute limit: one of seconds, one of minutes (to cancel), one of hours
# (its limit ends it); their runs have the same name.
LIMITED = "hydra.launcher.timeout_min=1"
THREE_JOBS = [
    *LONG_JOBS[:3],
    "train.learning_rate=0.1",
    "train.iterations=300,30000,10000000",
    "train.log_every=100",
    LIMITED,
]


def start_sweep(cluster, tmp_path, *args: str, make: bool = False) -> subprocess.Popen:
    """A sweep on the cluster, in a process group of its own, with a SQLite store in
    tmp_path; its stdout and stderr go to out.txt and err.txt there (appended). With
    ``make``: through ``make sweep``, ``args`` its ARGS."""
    overrides = [*SLURM, f"tracking.uri=sqlite:///{tmp_path / 'store' / 'mlflow.db'}"]
    command = [sys.executable, "-m", "pipeline.train", "-m", *overrides, *args]
    if make:
        words = [*overrides, f"hydra.sweep.dir={tmp_path / 'multirun'}"]
        command = ["make", "-s", "-C", str(ROOT), "sweep", f"ARGS={' '.join(words)}", *args]
    with open(tmp_path / "out.txt", "a") as out, open(tmp_path / "err.txt", "a") as err:
        return subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
            env=os.environ | sweep_env(cluster),
            start_new_session=True,
        )


def store_client(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")


def running_children(tmp_path) -> list:
    """The sweep's children RUNNING in its store, once its launcher has created the parent."""
    if not started(tmp_path, "out.txt"):
        return []
    return [
        r for r in parents_and_children(store_client(tmp_path))[1] if r.info.status == "RUNNING"
    ]


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


def running_job(tmp_path, iterations: str):
    """The RUNNING run of the job of ``iterations``, once it trains."""

    def run():  # its params are logged just after its run is created
        runs = running_children(tmp_path)
        return next((r for r in runs if r.data.params.get("train.iterations") == iterations), None)

    wait_for_store(run, f"the job of {iterations} iterations to start")
    return run()


def cancel_once_training(cluster, tmp_path, iterations: str = "30000"):
    """Once the run of ``iterations`` trains and has sent points, ``scancel`` its Slurm job;
    then until its run has ended. The run, as it ended."""
    run_id = running_job(tmp_path, iterations).info.run_id
    client = store_client(tmp_path)
    wait_for_store(lambda: client.get_metric_history(run_id, "train_cost"), "its first points")
    cluster.run("scancel", slurm_job_of(cluster, client.get_run(run_id)))
    wait_for_store(lambda: client.get_run(run_id).info.status != "RUNNING", "the run to end")
    return client.get_run(run_id)


def assert_clean_end(
    launcher: subprocess.Popen, tmp_path, code: int = 0, timeout: float = 120
) -> tuple[str, str]:
    """The launcher ends by itself with ``code`` within ``timeout`` seconds, without a
    traceback nor submitit's warnings; its (stdout, stderr)."""
    assert launcher.wait(timeout=timeout) == code, (tmp_path / "err.txt").read_text()[-3000:]
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert "Traceback" not in err and "Bypassing" not in err, err[-3000:]
    return out, err


def test_a_cancelled_job_and_one_over_its_limit_end_killed_and_a_resume_runs_them_alone(
    slurm, tmp_path
):
    launcher = start_sweep(slurm, tmp_path, *THREE_JOBS)
    with ended(launcher, slurm):
        cancelled = cancel_once_training(slurm, tmp_path, "30000")
        assert cancelled.info.status == "KILLED"
        assert cancelled.data.tags.get("killed_reason") == slurm_reasons.CANCELLED
        client = store_client(tmp_path)
        assert client.get_metric_history(cancelled.info.run_id, "train_cost")  # points kept

        # the sweep goes on: the short job finishes, the long one meets its limit (~1 min):
        # Slurm's SIGTERM ends its run KILLED, then the parent ends, its counts right. That
        # job only waits for its limit: at the lowest priority, it leaves the CPU to others.
        hours_pid = running_job(tmp_path, "10000000").data.tags["worker_pid"]
        psutil.Process(int(hours_pid)).nice(19)
        out, _ = assert_clean_end(launcher, tmp_path, timeout=300)
        assert "sweep done in" in out and ": 1 finished, 2 killed" in out, out
        # one line for each job Slurm ended
        assert out.count(slurm_reasons.CANCELLED) == out.count(slurm_reasons.TIME_LIMIT) == 1
        (parent,), children = parents_and_children(client)
        assert parent.info.status == "FINISHED"
        (limited,) = [c for c in children if c.data.params["train.iterations"] == "10000000"]
        assert limited.info.status == "KILLED", limited.data.tags.get("failure_reason")
        assert limited.data.tags.get("killed_reason") == slurm_reasons.TIME_LIMIT
        assert client.get_metric_history(limited.info.run_id, "train_cost")  # points kept
        assert sorted(c.info.status for c in children) == ["FINISHED", "KILLED", "KILLED"]

    # make sweep RESUME=latest runs those two jobs alone
    resumed = start_sweep(slurm, tmp_path, "RESUME=latest", make=True)
    with ended(resumed, slurm):
        again = {cancelled.data.tags["config_digest"], limited.data.tags["config_digest"]}

        def reruns():
            runs = running_children(tmp_path)
            return len([r for r in runs if r.data.tags["config_digest"] in again]) == 2

        wait_for_store(reruns, "the killed jobs to run again")
        out = (tmp_path / "out.txt").read_text()
        assert "3 jobs, 1 finished, 2 to run" in out, out
        # the finished job's Slurm job returns at once, without a run: those two train alone
        slurm_cluster.wait_until(lambda: len(slurm.queue()) == 2, 120, "two jobs left", slurm)
        statuses = sorted(c.info.status for c in parents_and_children(client)[1])
        assert statuses == ["FINISHED", "KILLED", "KILLED", "RUNNING", "RUNNING"]


@pytest.fixture
def slurm_without_accounting():
    """A cluster with no accounting: ``sacct`` fails, as on the issue's trial."""
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster.slurm_cluster(accounting=False) as cluster:
        yield cluster


def test_without_accounting_the_launcher_learns_a_jobs_end_and_sigterm_cancels_the_rest(
    slurm_without_accounting, tmp_path
):
    cluster = slurm_without_accounting
    assert cluster.run("sacct", check=False).returncode != 0
    launcher = start_sweep(
        cluster,
        tmp_path,
        *LONG_JOBS[:3],
        "train.learning_rate=0.1",
        "train.iterations=30000,30001",
        "train.log_every=100",
    )
    with ended(launcher, cluster):
        wait_for_store(lambda: len(running_children(tmp_path)) == 2, "both runs to start")
        run = cancel_once_training(cluster, tmp_path, "30000")
        assert run.data.tags.get("killed_reason") == slurm_reasons.CANCELLED
        # the launcher learns of it from squeue, without sacct: it never hangs
        slurm_cluster.wait_until(
            lambda: slurm_reasons.CANCELLED in (tmp_path / "out.txt").read_text(),
            120,
            "the launcher's line for the cancelled job",
            cluster,
        )

        # SIGTERM to the launcher: its other Slurm job is cancelled, its run ends KILLED
        launcher.send_signal(signal.SIGTERM)
        out, err = assert_clean_end(launcher, tmp_path, code=143)
        assert not cluster.queue()  # nothing left running in Slurm
        (parent,), children = parents_and_children(store_client(tmp_path))
        assert parent.info.status == "KILLED"
        assert [c.info.status for c in children] == ["KILLED", "KILLED"]
        assert "sweep killed after" in out and ": 0 finished, 2 killed" in out, out
        warnings = [line for line in err.splitlines() if "sacct" in line]
        assert len(warnings) == 1 and warnings[0].startswith("warning: "), err[-3000:]
