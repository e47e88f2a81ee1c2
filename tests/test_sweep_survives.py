"""Sweeps that survive: kill -9 and resume, SIGTERM, a dead worker, two sweeps at once, dry runs.

Real launchers (joblib's loky workers), real signals, real SQLite stores.
"""

import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from pipeline import train
from pipeline.job.run import run_job
from tests.helpers import (
    CONF,
    ROOT,
    call_main,
    jobs_past_their_first_point,
    loky_leftovers,
    parents_and_children,
    run_cli,
    stops_caught,
    wait_until,
)

pytestmark = pytest.mark.slow
# 12 jobs of under a second each: long enough to interrupt, short enough for the suite.
GRID = [
    "sweep=default",
    "model.depth=1,2",
    "model.width=8,16,32",
    "train.learning_rate=0.1,0.5",
    "train.iterations=2000",
    "train.log_every=50",
    "hydra.launcher.n_jobs=2",
]


def start(uri, tmp_path, *args, make=False, out="out.txt", env=None):
    """A sweep in a process group of its own (``env`` added to its environment); stdout and
    stderr go to files in tmp_path."""
    if make:
        where = [f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
        command = [
            "make",
            "-s",
            "-C",
            str(ROOT),
            "sweep",
            "SWEEP=default",
            f"ARGS={' '.join([*where, *GRID[1:], *args])}",
        ]
    else:
        command = [sys.executable, "-m", "pipeline.train", "-m", f"tracking.uri={uri}", *GRID]
        command += list(args)
    with open(tmp_path / out, "w") as stdout, open(tmp_path / f"err-{out}", "w") as stderr:
        return subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            env=os.environ | (env or {}),
        )


def started(tmp_path, out="out.txt") -> bool:
    """The sweep has created its store and parent run (a probe before then would race it)."""
    return "parent run" in (tmp_path / out).read_text()


def statuses(client, experiment: str | None = None):
    runs = parents_and_children(client, experiment)[1]
    return collections.Counter(r.info.status for r in runs)


def descendants(pid):
    return psutil.Process(pid).children(recursive=True)


def gone_within(processes, seconds):
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return not alive


def test_kill_9_of_the_launcher_then_resume_runs_exactly_what_had_not_finished(
    store, tmp_path, capfd
):
    uri, client = store
    launcher = start(uri, tmp_path)
    wait_until(lambda: started(tmp_path) and statuses(client())["FINISHED"] >= 5)
    workers = descendants(launcher.pid)
    launcher.kill()
    launcher.wait()
    assert gone_within(workers, 10), "a worker outlived its launcher"
    assert not loky_leftovers(launcher.pid)
    errors = (tmp_path / "err-out.txt").read_text()
    assert "Warning" not in errors and "leaked" not in errors, errors  # loky's resource tracker
    (parent,), children = parents_and_children(client())
    assert parent.info.status == "KILLED" and "launcher" in parent.data.tags["killed_reason"]
    finished = {c.data.tags["config_digest"] for c in children if c.info.status == "FINISHED"}
    assert 5 <= len(finished) < 12 and not statuses(client())["RUNNING"]

    resume = ["-m", "--resume", "latest", f"tracking.uri={uri}"]
    changed = call_main(capfd, train.main, *resume, "train.iterations=5", cwd=tmp_path)
    refused = f"error: {parent.info.run_name} runs with the overrides it recorded: drop "
    assert changed.returncode == 2 and changed.stderr.startswith(refused + "train.iterations=5")
    dry = call_main(capfd, train.main, *resume, "--dry-run", cwd=tmp_path)
    states = collections.Counter(line.split()[1] for line in dry.stdout.splitlines()[:-1])
    assert states == {"done": len(finished), "to": 12 - len(finished)}  # "to run"
    assert dry.stdout.strip().endswith(
        f"12 jobs, {len(finished)} done, {12 - len(finished)} to run (dry run: nothing trained or "
        "written)"
    )

    before = {c.info.run_id for c in children}
    done = run_cli(
        "pipeline.train", "-m", "--resume", "latest", f"tracking.uri={uri}", cwd=tmp_path
    )
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr[-2000:]
    assert f"12 jobs, {len(finished)} finished, {12 - len(finished)} to run" in done.stdout
    (again,), children = parents_and_children(client())
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    new = [c for c in children if c.info.run_id not in before]
    assert {c.data.tags["config_digest"] for c in new}.isdisjoint(finished)  # none twice
    assert len(new) == 12 - len(finished) and {c.info.status for c in new} == {"FINISHED"}
    per_config = collections.Counter(
        c.data.tags["config_digest"] for c in children if c.info.status == "FINISHED"
    )
    assert len(per_config) == 12 and set(per_config.values()) == {1}
    assert again.data.metrics["jobs_finished"] == 12  # each config once, its latest attempt

    # a resumed job's curve is an uninterrupted run's, bit for bit
    job = new[0]
    overrides = [f"{k}={job.data.params[k]}" for k in ("model.depth", "model.width")]
    overrides += ["train.learning_rate=" + job.data.params["train.learning_rate"]]
    alone_uri = f"sqlite:///{tmp_path / 'alone' / 'mlflow.db'}"
    alone_argv = [f"tracking.uri={alone_uri}", *overrides, *GRID[4:6]]  # iterations, log_every
    with_cli = call_main(capfd, train.main, *alone_argv, cwd=tmp_path)
    assert with_cli.returncode == 0, with_cli.stderr[-2000:]
    (alone,) = parents_and_children(MlflowClient(alone_uri))[0]
    assert alone.data.tags["config_digest"] == job.data.tags["config_digest"]
    curve = [m.value for m in client().get_metric_history(job.info.run_id, "train_cost")]
    assert curve == [
        m.value for m in MlflowClient(alone_uri).get_metric_history(alone.info.run_id, "train_cost")
    ]

    by_id = ["-m", "--resume", parent.info.run_id, f"tracking.uri={uri}"]
    complete = call_main(capfd, train.main, *by_id, cwd=tmp_path)
    assert complete.returncode == 0 and "12 finished, 0 to run" in complete.stdout
    assert len(parents_and_children(client())[1]) == len(children)  # nothing ran


def test_a_job_ending_as_its_launcher_is_killed_is_finished_and_never_run_again(store, tmp_path):
    """The race of a job's end with its launcher's death, provoked: the first job's run pauses
    between its last write and its FINISHED status (tests/pause_before_finished.py, on the
    sweep's PYTHONPATH), and the launcher is killed with -9 during the pause."""
    uri, client = store
    site = tmp_path / "site"
    site.mkdir()
    shutil.copyfile(Path(__file__).with_name("pause_before_finished.py"), site / "sitecustomize.py")
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(paths), "PAUSE_DIR": str(tmp_path)}
    launcher = start(uri, tmp_path, "model.width=8,16", env=env)  # 8 jobs
    marker = tmp_path / "paused"
    wait_until(lambda: marker.exists() and marker.read_text())  # the run id, once written
    paused = marker.read_text()
    workers = descendants(launcher.pid)
    launcher.kill()
    launcher.wait()
    assert gone_within(workers, 30), "a worker outlived its launcher"
    run = client().get_run(paused)
    assert run.info.status == "FINISHED" and "killed_reason" not in run.data.tags
    assert {"train_accuracy", "test_accuracy", "train_seconds"} <= set(run.data.metrics)
    artifacts = {a.path for a in client().list_artifacts(paused)}
    assert artifacts == {"config.yaml", "cost_curve.png", "decision_boundary.png", "parameters.npz"}
    errors = (tmp_path / "err-out.txt").read_text()
    assert "Warning" not in errors and "Traceback" not in errors, errors  # loky's "leaked semlock"

    done = run_cli(
        "pipeline.train", "-m", "--resume", "latest", f"tracking.uri={uri}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr
    children = parents_and_children(client())[1]
    digests = collections.Counter(c.data.tags["config_digest"] for c in children)
    assert digests[run.data.tags["config_digest"]] == 1  # never trained again
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len({c.data.tags["config_digest"] for c in finished}) == 8


@pytest.mark.parametrize("through_make", [False, True], ids=["launcher", "make"])
def test_sigterm_ends_the_sweep_killed_and_leaves_no_process(store, tmp_path, through_make):
    uri, client = store
    # no live batch: a job's points reach the store only as it ends
    sweep = start(
        uri, tmp_path, "train.iterations=10000000", "tracking.flush_seconds=1e9", make=through_make
    )
    # both jobs in flight are past their first point (they never finish)
    wait_until(lambda: started(tmp_path))
    wait_until(jobs_past_their_first_point(client(), 2))
    processes = descendants(sweep.pid)
    sweep.send_signal(signal.SIGTERM)  # to make, or to the launcher: not to the workers
    code = sweep.wait(timeout=120)
    assert code in ((-signal.SIGTERM, 128 + signal.SIGTERM) if through_make else (143,))
    assert gone_within(processes, 10), "a process outlived the sweep"
    (parent,), children = parents_and_children(client())
    assert parent.info.status == "KILLED"
    assert children and {c.info.status for c in children} == {"KILLED"}
    for child in children:  # each job in flight sent its points before its worker went
        assert client().get_metric_history(child.info.run_id, "train_cost"), child.info.run_name
    out = (tmp_path / "out.txt").read_text()
    assert "sweep killed after" in out and f"{len(children)} killed" in out
    assert "Traceback" not in (tmp_path / "err-out.txt").read_text()


def test_a_dead_worker_fails_its_own_job_only(store, tmp_path):
    uri, client = store
    # 8 jobs, some left after the death; the width-64 ones train for seconds, long enough
    # to be killed mid-job (a width-8 job may end between the look and the kill)
    launcher = start(uri, tmp_path, "model.width=8,64")
    long_running = []

    def a_long_job_runs_after_two_finished() -> bool:
        runs = parents_and_children(client())[1]
        long_running[:] = [
            r
            for r in runs
            if r.info.status == "RUNNING" and r.data.params.get("model.width") == "64"
        ]
        return sum(r.info.status == "FINISHED" for r in runs) >= 2 and bool(long_running)

    wait_until(lambda: started(tmp_path) and a_long_job_runs_after_two_finished())
    victim = long_running[0]
    os.kill(int(victim.data.tags["worker_pid"]), signal.SIGKILL)  # as the OOM killer does
    assert launcher.wait(timeout=300) == 0, (tmp_path / "err-out.txt").read_text()[-2000:]
    (parent,), children = parents_and_children(client())
    dead = client().get_run(victim.info.run_id)
    assert dead.info.status == "FAILED"
    assert dead.data.tags["failure_reason"] == "worker killed by signal 9 (SIGKILL); out of memory?"
    latest = {
        c.data.tags["config_digest"]: c for c in sorted(children, key=lambda c: c.info.start_time)
    }
    others = [c for d, c in latest.items() if d != victim.data.tags["config_digest"]]
    assert len(others) == 7 and {c.info.status for c in others} == {"FINISHED"}
    assert (
        parent.info.status == "FINISHED"
        and "Traceback" not in (tmp_path / "err-out.txt").read_text()
    )


def test_a_worker_killed_between_jobs_fails_no_job_and_the_sweep_carries_on(store, tmp_path):
    uri, client = store
    # 1 job on 2 workers: one worker is idle while the other trains
    job = ["model.depth=1", "model.width=8", "train.learning_rate=0.1", "train.iterations=30000"]
    launcher = start(uri, tmp_path, *job, "train.log_every=1000", "hydra.launcher.n_jobs=2")
    wait_until(lambda: started(tmp_path))
    wait_until(jobs_past_their_first_point(client(), 1))
    busy = {c.data.tags["worker_pid"] for c in parents_and_children(client())[1]}
    idle = [
        child
        for child in psutil.Process(launcher.pid).children()
        if "popen_loky_posix" in " ".join(child.cmdline()) and str(child.pid) not in busy
    ]
    idle[0].kill()
    assert launcher.wait(timeout=300) == 0, (tmp_path / "err-out.txt").read_text()[-2000:]
    said = "a worker died (worker killed by signal 9 (SIGKILL); out of memory?): it was between"
    assert f"{said} two jobs; carrying on" in (tmp_path / "out.txt").read_text()
    (parent,), children = parents_and_children(client())
    ended = collections.defaultdict(list)  # digest -> its runs' statuses, oldest first
    for child in sorted(children, key=lambda c: c.info.start_time):
        ended[child.data.tags["config_digest"]].append(child.info.status)
    assert list(ended.values()) == [["KILLED", "FINISHED"]]
    assert parent.info.status == "FINISHED"


def test_two_sweeps_at_once_on_a_new_store_both_succeed(new_store, tmp_path):
    uri, client = new_store
    # 4 jobs each: the race is the new store's creation, then their writes side by side
    quick = [
        "model.width=8",
        "train.iterations=200",
        "train.log_every=20",
        "hydra.launcher.n_jobs=1",
    ]
    sweeps = [start(uri, tmp_path, *quick, out=f"out{i}.txt") for i in range(2)]
    assert [s.wait(timeout=300) for s in sweeps] == [0, 0]
    parents, children = parents_and_children(client())
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    by_parent = collections.Counter(c.data.tags["mlflow.parentRunId"] for c in children)
    assert by_parent == {p.info.run_id: 4 for p in parents}
    for i in range(2):
        errors = (tmp_path / f"err-out{i}.txt").read_text()
        assert "Warning" not in errors and "Traceback" not in errors, errors


def test_dry_run_lists_the_jobs_and_writes_nothing(new_store, tmp_path):
    uri, _ = new_store
    done = run_cli("pipeline.train", "-m", "--dry-run", f"tracking.uri={uri}", *GRID, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 13 and lines[-1].startswith("12 jobs (dry run")
    assert lines[0].split()[:2] == ["1", "d1-w8-lr0.1"] and "model.width=8" in lines[0]
    assert not (tmp_path / "store").exists() and not (tmp_path / "multirun").exists()


def test_a_stop_while_the_jobs_are_checked_creates_nothing(new_store, tmp_path):
    """Before the parent exists, SIGTERM is exit 143 (SIGINT 130, tests/test_search_corners.py),
    no traceback, nothing created."""
    signum = signal.SIGTERM
    uri, _ = new_store
    big = ["model.width=range(1,4001)", "sweep.max_jobs=100000"]  # 16,000 jobs: seconds to check
    sweep = start(uri, tmp_path, *big)
    # its stop handlers installed and its workers warming: checking the jobs
    wait_until(lambda: stops_caught(sweep.pid) and descendants(sweep.pid))
    assert sweep.poll() is None
    workers = descendants(sweep.pid)
    sweep.send_signal(signum)
    assert sweep.wait(timeout=60) == 128 + signum
    assert gone_within(workers, 10)
    errors = (tmp_path / "err-out.txt").read_text()
    assert "Traceback" not in errors and len(errors.strip().splitlines()) <= 1, errors
    assert not started(tmp_path) and not (tmp_path / "store").exists()


def test_resume_refuses_what_it_cannot_do(store, tmp_path, capfd):
    uri, client = store
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # closed before main
        single = run_job(compose("config", overrides=[f"tracking.uri={uri}", "train=quick"]))
    for target, message in [
        ("feedbeef", "error: run 'feedbeef' not found in sqlite:///"),
        (single.run_id, f"error: cannot resume: run {single.run_id} is not a sweep's parent"),
        ("seed=3", "error: --resume takes a parent run id or latest, not seed=3"),
    ]:
        argv = ["-m", "--resume", target, f"tracking.uri={uri}"]
        done = call_main(capfd, train.main, *argv, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.startswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert len(parents_and_children(client())[0]) == 1  # nothing written
