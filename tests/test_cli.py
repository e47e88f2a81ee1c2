"""The command line as a user runs it: real subprocesses, real Hydra, a real SQLite store; a
refusal in one line through ``main(argv)`` in this process."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipeline import train
from pipeline.store import tracking
from tests.helpers import (
    ROOT,
    all_runs,
    assert_one_error_line,
    call_main,
    free_port,
    jobs_past_their_first_point,
    parents_and_children,
    run_cli,
    wait_until,
)

pytestmark = pytest.mark.slow
QUICK = ["train.iterations=40", "train.log_every=4"]


def test_single_job_from_the_command_line(store, tmp_path):
    uri, client = store
    done = run_cli("pipeline.train", f"tracking.uri={uri}", *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = all_runs(client())
    assert run.info.status == "FINISHED"
    assert f"FINISHED run {run.info.run_id}" in done.stdout
    runs_table = f"#/experiments/{run.info.experiment_id}/runs?workflowType=machine_learning"
    assert runs_table in done.stdout
    assert run.data.tags["hydra.overrides"] == f"tracking.uri={uri} " + " ".join(QUICK)
    assert len(client().get_metric_history(run.info.run_id, "train_cost")) == 11


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=-1", "error: model.depth=-1 is invalid: must be >= 0"),
        ("train.learning_rate=0", "error: train.learning_rate=0.0 is invalid: must be a finite"),
        ("dataset.test_size=1.5", "error: dataset.test_size=1.5 is invalid"),
        ("train.log_every=100", "error: train.log_every=100 is invalid"),
        ("dataset.n_samples=4", "error: dataset.n_samples=4 is invalid"),
        ("model.activation=swish", "error: model.activation='swish' is invalid"),
        ("model.depth=abc", "error: model.depth='abc' is invalid: Value 'abc' of type 'str'"),
        ("model.depht=3", "error: model.depht is not a config key"),
        ("dataset=mons", "error: dataset=mons is invalid: known options: blobs"),
    ],
)
def test_bad_value_exits_with_one_line_and_no_run(new_store, tmp_path, capfd, override, message):
    uri, _ = new_store
    done = call_main(capfd, train.main, f"tracking.uri={uri}", *QUICK, override, cwd=tmp_path)
    assert_refused_in_one_line(done, message, tmp_path)


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("model.width=4,0", "error: model.width=0 is invalid: must be >= 1"),
        ("model.depth=1,deep", "error: model.depth='deep' is invalid: Value 'deep' of type"),
        ("model=default,wide", "error: model=wide is invalid: known options: default, logistic"),
        ("--cfg=job", "error: give only one of --run, --multirun, --cfg"),
    ],
)
def test_bad_value_in_a_sweep_is_refused_before_any_job(new_store, tmp_path, capfd, sweep, message):
    uri, _ = new_store
    argv = ["-m", f"tracking.uri={uri}", *QUICK, sweep]
    done = call_main(capfd, train.main, *argv, cwd=tmp_path)
    assert_refused_in_one_line(done, message, tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None,
    reason="the ray extra is installed (.venv-ray)",
)
def test_a_launcher_whose_extra_is_missing_names_the_extra(new_store, tmp_path, capfd):
    uri, _ = new_store
    ray = ["hydra/launcher=ray_cluster", "model.depth=1,2"]
    done = call_main(capfd, train.main, "-m", f"tracking.uri={uri}", *QUICK, *ray, cwd=tmp_path)
    message = "error: hydra/launcher=ray is not installed: pip install -e '.[ray]'"
    assert_refused_in_one_line(done, message, tmp_path)


def assert_refused_in_one_line(done, message, tmp_path):
    """Exit 2, one line on stderr starting with ``message``, no traceback, no store."""
    assert_one_error_line(done)
    assert done.stderr.strip().startswith(message)
    assert not (tmp_path / "store").exists()


def sweep(uri, tmp_path, *overrides):
    launcher = (
        []
        if any("hydra/launcher" in o or "n_jobs" in o for o in overrides)
        else ["hydra.launcher.n_jobs=2"]
    )
    done = run_cli(
        "pipeline.train",
        "-m",
        "sweep=default",
        f"tracking.uri={uri}",
        *QUICK,
        *overrides,
        *launcher,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_by_two_sweep_on_a_fresh_store(new_store, tmp_path):
    uri, client = new_store
    done = sweep(uri, tmp_path, "model.depth=1,2", "model.width=4,8", "train.learning_rate=0.5")
    (parent,), children = parents_and_children(client())
    assert len(children) == 4
    assert {c.data.tags[MLFLOW_PARENT_RUN_ID] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"} and parent.info.status == "FINISHED"
    assert {c.info.run_name for c in children} == {
        "d1-w4-lr0.5",
        "d1-w8-lr0.5",
        "d2-w4-lr0.5",
        "d2-w8-lr0.5",
    }
    assert {c.data.tags["job_number"] for c in children} == {"0", "1", "2", "3"}
    assert parent.info.run_name.startswith("default-")
    assert parent.data.metrics["jobs_finished"] == 4 and parent.data.metrics["jobs_failed"] == 0
    best = max(
        children, key=lambda c: (c.data.metrics["val_accuracy"], -c.data.metrics["val_cost"])
    )
    assert parent.data.metrics["best_val_accuracy"] == best.data.metrics["val_accuracy"]
    assert parent.data.metrics["best_run_test_accuracy"] == best.data.metrics["test_accuracy"]
    artifacts = {a.path for a in client().list_artifacts(parent.info.run_id)}
    recorded = {"comparison.csv", "cost_curves.png", "jobs.json"}
    page = {"importance.json", "report.html", "curves.png"}  # and the figures it has data for
    figures = {"importance.png", "marginals.png", "pairs.png"}
    assert recorded | page <= artifacts <= recorded | page | figures
    recorded = client().download_artifacts(parent.info.run_id, "jobs.json", str(tmp_path))
    jobs = json.loads(Path(recorded).read_text())  # what a resume would run: these very jobs
    assert sorted(jobs["digests"]) == sorted(c.data.tags["config_digest"] for c in children)
    assert done.stdout.count("[job ") == 4 and "/4]" in done.stdout
    assert "s: 4 finished\nbest runs:" in done.stdout  # no failed or killed job to count
    runs_table = f"#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning"
    assert runs_table in done.stdout
    note = parent.data.tags["mlflow.note.content"]  # the parent's description in the UI
    swept = "Swept model.depth in {1, 2} x model.width in {4, 8}: 4 jobs, 4 finished."
    assert note.startswith(swept)
    assert f"Best run: **{best.info.run_name}**" in note
    assert f'make report ARGS="--sweep {parent.info.run_id}"' in note


def test_diverging_job_fails_while_its_sibling_finishes(store, tmp_path):
    uri, client = store
    # one process: a job's failure is Hydra's to record, the next job its own
    one = "hydra.launcher.n_jobs=1"
    sweep(uri, tmp_path, "model.depth=3", "model.width=64", "train.learning_rate=0.1,30", one)
    (parent,), children = parents_and_children(client())
    status = {c.info.run_name: c.info.status for c in children}
    assert status == {"d3-w64-lr0.1": "FINISHED", "d3-w64-lr30": "FAILED"}
    failed = next(c for c in children if c.info.status == "FAILED")
    assert failed.data.tags["failure_reason"].startswith("diverged")
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_failed"] == 1


def test_ctrl_c_leaves_no_run_running_and_keeps_the_points(store, tmp_path):
    uri, client = store
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        "-m",
        "sweep=default",
        f"tracking.uri={uri}",
        "train.iterations=10000000",
        "train.log_every=1000",
        "model.depth=1,2",
        "model.width=4",
        "train.learning_rate=0.1",
        "hydra.launcher.n_jobs=2",
        "tracking.flush_seconds=1e9",  # no live batch: points reach the store only at the end
    ]
    # A terminal's Ctrl-C: SIGINT to the whole process group, workers included.
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first_line = process.stdout.readline()  # printed once the sweep has created the store
        assert b"parent run" in first_line, first_line
        # both jobs are past their first point (they never finish)
        wait_until(jobs_past_their_first_point(client(), 2), what="both jobs training")
        assert len(running(client())) == 3, "the parent and both jobs should be running"
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 130  # 128 + SIGINT, as a shell reports Ctrl-C
        assert b"Traceback" not in err, err[-3000:]
        assert b"sweep killed after" in out and b"0 finished, 2 killed" in out
        outlived = "a worker outlived the sweep"
        wait_until(lambda: not group_alive(process.pid), timeout=10, what=outlived)
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    parents, children = parents_and_children(client())
    assert [p.info.status for p in parents] == ["KILLED"]
    assert {c.info.status for c in children} == {"KILLED"}
    for child in children:  # each interrupted job sent its points before its worker went
        assert client().get_metric_history(child.info.run_id, "train_cost"), child.info.run_name


def test_a_long_run_shows_its_curves_while_it_trains(store, tmp_path):
    """Another process reads the store while the run trains: train_cost points are there."""
    uri, client = store
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        f"tracking.uri={uri}",
        "train.iterations=10000000",
        "train.log_every=200",
        "tracking.flush_seconds=0.5",
    ]
    tracking.connect(uri)  # the store's tables first: two processes creating them would race
    # SIGINT as a terminal sends it, even if this test runs where it is ignored (a background job)
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # two batches at least
        wait_until(lambda: len(train_cost_so_far(client())) >= 2, what="points while it trains")
        runs = all_runs(client())
        steps = {m.step for m in train_cost_so_far(client())}
        assert client().get_run(runs[0].info.run_id).info.status == "RUNNING"
        assert {m.step for m in client().get_metric_history(runs[0].info.run_id, "val_cost")}
        process.send_signal(signal.SIGINT)  # Ctrl-C: the run ends KILLED, its points kept
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    run = client().get_run(runs[0].info.run_id)
    assert run.info.status == "KILLED"
    stored = client().get_metric_history(run.info.run_id, "train_cost")
    assert steps <= {m.step for m in stored}
    assert [m.step for m in stored] == list(range(0, 200 * len(stored), 200))  # none lost


def train_cost_so_far(client) -> list:
    """The train_cost points of the store's run (none before it exists)."""
    runs = all_runs(client)
    return client.get_metric_history(runs[0].info.run_id, "train_cost") if runs else []


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def running(client):
    return [r for r in all_runs(client) if r.info.status == "RUNNING"]


def test_sweep_through_the_submitit_local_launcher(store, tmp_path):
    uri, client = store
    sweep(
        uri,
        tmp_path,
        "hydra/launcher=submitit_local",
        "model.depth=1,2",
        "model.width=4",
        "train.learning_rate=0.5",
    )
    (parent,), children = parents_and_children(client())
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags[MLFLOW_PARENT_RUN_ID] for c in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert list((tmp_path / "multirun").rglob(".submitit")), "the jobs ran through submitit"


# ---- make: what a user types is passed on, never run ------------------------------------------


MAKE_ERROR = re.compile(r"make(\[\d+\])?: \*\*\*")


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``make -s ARGS`` in the project's root; make's own "Error 2" line left out of stderr
    (``make: ***``, or ``make[1]: ***`` when the tests run under ``make test``)."""
    done = subprocess.run(
        ["make", "-s", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        timeout=300,
    )
    lines = done.stderr.splitlines()
    done.stderr = "\n".join(line for line in lines if not MAKE_ERROR.match(line))
    return done


INJECTED = "x;echo INJECTED"  # run as a command, it prints INJECTED on a line of its own


@pytest.fixture(scope="module")
def made_store(tmp_path_factory) -> str:
    """A store that exists (a new one's MLflow lines would join the error's): its URI."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('made') / 'mlflow.db'}"
    tracking.connect(uri)
    return uri


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reproduce", f"RUN={INJECTED}"], f"run '{INJECTED}' not found"),
        (["sweep", "DRY=1", "ARGS=model.depth=1; echo INJECTED"], "model.depth=1; cannot be"),
        (["sweep", "DRY=1", "ARGS=model.depth=`echo INJECTED`"], "model.depth=`echo"),
        (["sweep", "DRY=1", "ARGS=model.depth=$$(echo INJECTED)"], "model.depth=$(echo"),
        (["sweep", "DRY=1", f"RESUME={INJECTED}"], f"'{INJECTED}' not found"),
        (["search", f"N={INJECTED}"], f"search.n_trials={INJECTED} cannot be parsed"),
        (["ui", f"HOST={INJECTED}"], f"HOST={INJECTED} is not an address of this machine"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else None,
)
def test_make_never_runs_a_value_as_a_command(made_store, args, message):
    done = make(*args, env={"MLFLOW_TRACKING_URI": made_store, "PORT": str(free_port())})
    assert "INJECTED" not in done.stdout.splitlines()
    assert_one_error_line(done, message)


def test_make_passes_a_path_with_spaces_and_quoted_overrides_whole(made_store, tmp_path):
    uri = made_store
    config = tmp_path / "a folder" / "config.yaml"
    config.parent.mkdir()
    config.write_text("a: 1\n")
    done = make("reproduce", f"RUN={config}", env={"MLFLOW_TRACKING_URI": uri})
    assert_one_error_line(done, f"{config} is not a config")  # the path reached it whole
    done = make(
        "sweep",
        "DRY=1",
        "ARGS='dataset=glob(m*)' model.depth=2 'tracking.experiment=a b'",
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert done.returncode == 0, done.stderr
    jobs = done.stdout.splitlines()[:-1]
    assert len(jobs) == 9 and all("dataset=moons tracking.experiment=a\\ b" in j for j in jobs)


def test_a_dry_run_read_line_by_line_and_left_early_ends_quietly():
    """``make sweep DRY=1 | head``: the list arrives a line at a time; when its reader stops,
    the dry run stops too, exit 141 as for SIGPIPE, no traceback."""
    grid = ["-m", "--dry-run", "model.width=range(1,1000)"]
    command = [sys.executable, "-m", "pipeline.train", *grid]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(command, cwd=ROOT, text=True, **pipes)
    assert process.stdout.readline().split()[:2] == ["1", "d2-w1-lr0.1"]
    process.stdout.close()  # as `head -1` does
    assert process.wait(timeout=300) == 141
    assert process.stderr.read() == ""
