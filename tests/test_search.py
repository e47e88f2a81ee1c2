"""make search: Optuna's study on a real SQLite storage beside a real SQLite store, every trial a
child run of one parent, pruning, resuming and two processes on one study."""

import collections
import signal
import subprocess
import sys
import warnings

import optuna
import psutil
import pytest
from mlflow import MlflowClient

from pipeline import report, search, train
from pipeline.sweeps import studies
from tests.helpers import (
    assert_one_error_line,
    call_main,
    parents_and_children,
    run_cli,
    wait_until,
)
from tests.test_sweep_survives import statuses

pytestmark = pytest.mark.slow
# 200 iterations, 20 points each: a trial takes well under a second
QUICK = ["train=quick", "train.log_every=10", "search.workers=1"]
DIVERGING = ["model.depth=3", "model.width=64", "train.learning_rate=interval(50,100)"]
SLOW_TO_LEARN = [
    "model.depth=1",
    "model.width=16",
    "train.learning_rate=tag(log,interval(1e-5,0.5))",
]


def command(uri, *overrides):
    return ["pipeline.search", "search.n_trials=4", f"tracking.uri={uri}", *QUICK, *overrides]


# The warnings Python ignores by default: a search's process would print any other.
IGNORED_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def search_run(capfd, uri, tmp_path, *overrides):
    """A search that succeeds, its main(argv) in this process (its trials in its one worker,
    or in its workers' processes), with no warning Python would show: (its output, parents,
    children, the study)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = call_main(capfd, search.main, *command(uri, *overrides)[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = [str(w.message) for w in caught if not issubclass(w.category, IGNORED_BY_DEFAULT)]
    # stderr: its workers' processes too (search.workers=2)
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert not shown, shown
    parents, children = parents_and_children(MlflowClient(uri))
    return done, parents, children, study_of(uri, parents[0])


def study_of(uri, parent) -> optuna.Study:
    storage = studies.storage_url(None, uri)
    return optuna.load_study(study_name=parent.data.tags["optuna_study"], storage=storage)


def states(study) -> list[str]:
    return sorted(t.state.name for t in study.trials)


def test_four_trials_are_four_children_with_distinct_configs(store, tmp_path, capfd):
    uri, _ = store
    done, parents, children, study = search_run(capfd, uri, tmp_path, "search.workers=2")
    (parent,) = parents
    assert parent.info.run_name.startswith("search-") and parent.info.status == "FINISHED"
    assert parent.data.tags["optuna_study"] == parent.info.run_name == study.study_name
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    configs = {
        tuple(c.data.params[k] for k in ("model.depth", "model.width", "train.learning_rate"))
        for c in children
    }
    assert len(configs) == 4  # two workers, seeded apart
    # each trial is its run: its number, its value (the validation accuracy) and its params
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    for child in children:
        trial = by_run[child.info.run_id]
        assert child.data.tags["optuna_trial"] == str(trial.number)
        assert trial.value == child.data.metrics["val_accuracy"]
        assert int(child.data.params["model.depth"]) == trial.params["model.depth"]
    assert f"best trial {study.best_trial.number}: {study.best_value:.4f}" in done.stdout
    assert not any(key.startswith("search.") for key in children[0].data.params)


def test_every_trial_diverging_ends_the_search_cleanly(store, tmp_path, capfd):
    """A diverged trial is a failure for the sampler (FAIL), not a poor value; and when all
    diverge, the search still ends: no traceback, the parent FINISHED, exit 0."""
    uri, _ = store
    done, parents, children, study = search_run(
        capfd, uri, tmp_path, *DIVERGING, "search.n_trials=3"
    )
    assert parents[0].info.status == "FINISHED"
    assert {c.info.status for c in children} == {"FAILED"} and states(study) == ["FAIL"] * 3
    assert "s: 0 finished, 3 failed\n" in done.stdout
    # a progress line per trial says it diverged, and nothing else but the new store's lines
    assert all("mlflow.store.db" in line for line in done.stderr.splitlines()), done.stderr


def test_a_bad_trial_is_pruned_and_recorded_so(store, tmp_path, capfd):
    uri, _ = store
    done, parents, children, study = search_run(
        capfd, uri, tmp_path, *SLOW_TO_LEARN, "search.n_trials=6", "search.startup_trials=2"
    )
    pruned = [c for c in children if "pruned_at" in c.data.tags]
    assert pruned, [c.data.params["train.learning_rate"] for c in children]
    for run in pruned:
        at = int(run.data.tags["pruned_at"])
        assert run.info.status == "KILLED" and "pruned" in run.data.tags["killed_reason"]
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_cost")
        assert max(m.step for m in history) == at < 200  # it stopped training there
    assert states(study).count("PRUNED") == len(pruned)
    trials = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    for run in pruned:  # what the pruner saw: -val_cost at each point, up to where it stopped
        trial = trials[run.info.run_id]
        assert trial.state.name == "PRUNED"
        assert max(trial.intermediate_values) == int(run.data.tags["pruned_at"])
    assert parents[0].data.metrics["jobs_pruned"] == len(pruned)
    assert f"{len(pruned)} pruned" in done.stdout
    reported = call_main(capfd, report.main, "--tracking-uri", uri, cwd=tmp_path)
    assert f"{len(pruned)} pruned" in reported.stdout


def test_resume_adds_trials_to_the_same_study_and_parent(store, tmp_path, capfd):
    """The resume (its one worker's trials) is main(argv), in this process."""
    uri, _ = store
    search_run(capfd, uri, tmp_path, "search.pruner=none")
    more = ["search.n_trials=3", "search.pruner=none", f"tracking.uri={uri}"]
    resumed = call_main(capfd, search.main, "--resume", "latest", *more, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    parents, children = parents_and_children(MlflowClient(uri))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 7
    study = study_of(uri, parents[0])
    assert [t.number for t in study.trials] == list(range(7))
    assert "4 trials before" in resumed.stdout and "s: 7 finished" in resumed.stdout
    # resumed with the overrides the search recorded: train=quick, 20 points a trial
    assert {len(t.intermediate_values) for t in study.trials} == {21}


def two_processes(uri, tmp_path) -> list:
    """Two searches started at once on the study ``shared``, 3 trials each, both exit 0: the
    parents and children in the store."""
    shared = ["search.study=shared", "search.n_trials=3", "search.pruner=none"]
    both = [
        subprocess.Popen(
            [sys.executable, "-m", *command(uri, *shared)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    return parents_and_children(MlflowClient(uri))


def test_two_processes_share_one_study_and_one_parent_and_propose_what_one_would(
    store, tmp_path, capfd
):
    """No trial twice, none lost, one parent. A trial's draws are seeded from the config's
    seed and its number: two processes on one study propose the trials one process would
    (the sampler's random first ones), not draws of their process ids, which gave this test a
    diverging trial one run in 25."""
    uri, _ = store
    parents, children = two_processes(uri, tmp_path)
    (parent,) = parents
    assert parent.info.run_name == "shared" and parent.info.status == "FINISHED"
    assert len(children) == 6 and {c.info.status for c in children} == {"FINISHED"}
    study = study_of(uri, parent)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(6))  # no trial twice, none lost
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == numbers
    by_process = collections.Counter(c.data.tags["launcher"] for c in children)
    assert sorted(by_process.values()) == [3, 3]

    alone = search_run(
        capfd,
        f"sqlite:///{tmp_path / 'alone' / 'mlflow.db'}",
        tmp_path,
        "search.n_trials=6",
        "search.pruner=none",
    )[3]
    assert {t.number: t.params for t in study.trials} == {t.number: t.params for t in alone.trials}


def search_in_flight(uri, client, tmp_path) -> subprocess.Popen:
    """A search of two workers with long trials, once both workers' trials are running."""
    long_trials = ["train.iterations=20000", "train.log_every=1000", "search.workers=2"]
    with open(tmp_path / "out.txt", "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *command(uri, *long_trials)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until(lambda: "parent run" in (tmp_path / "out.txt").read_text())  # the store exists
    wait_until(lambda: statuses(client())["RUNNING"] >= 2)
    return process


def test_sigterm_ends_the_search_killed_and_leaves_nothing_running(store, tmp_path):
    uri, client = store
    process = search_in_flight(uri, client, tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    (parent,) = parents_and_children(client())[0]
    assert parent.info.status == "KILLED"
    assert "Traceback" not in (tmp_path / "out.txt").read_text()
    assert not statuses(client())["RUNNING"] and statuses(client())["KILLED"] >= 2
    assert "RUNNING" not in states(study_of(uri, parent))  # ended FAIL, not left running


def test_kill_9_of_the_launcher_leaves_nothing_running(store, tmp_path):
    """Its workers see the launcher gone, end its runs KILLED, its trials FAIL and the parent
    KILLED (no other process works on the study), then exit: nothing trains on."""
    uri, client = store
    process = search_in_flight(uri, client, tmp_path)
    workers = psutil.Process(process.pid).children()
    process.kill()
    process.wait()
    psutil.wait_procs(workers, timeout=30)
    assert not any(w.is_running() for w in workers)
    (parent,) = parents_and_children(client())[0]
    assert parent.info.status == "KILLED" and "died" in parent.data.tags["killed_reason"]
    assert not statuses(client())["RUNNING"] and statuses(client())["KILLED"] >= 2
    assert "RUNNING" not in states(study_of(uri, parent))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([train.main, "-m", "sweep=search"], "sweep=search is a search: run it with make search"),
        ([search.main, "hydra.sweeper.n_trials=4"], "hydra.sweeper.n_trials=4 is Hydra's"),
    ],
)
def test_the_old_way_of_searching_is_one_line(store, tmp_path, capfd, argv, message):
    uri, _ = store
    done = call_main(capfd, *argv, f"tracking.uri={uri}", cwd=tmp_path)
    assert_one_error_line(done, message)


def test_a_study_on_postgresql_as_on_several_machines(store, tmp_path, postgres):
    uri, client = store
    storage = postgres("optuna")  # what machines share: a database server
    # quoted: the URL has an = (a Unix socket's folder), as in Hydra's override grammar
    shared = [
        f"search.storage='{storage}'",
        "search.study=team",
        "search.workers=2",
        "search.n_trials=2",
    ]
    done = run_cli(*command(uri, *shared), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    parents, children = parents_and_children(client())
    study = optuna.load_study(study_name="team", storage=storage)
    assert len(study.trials) == 2 == len(children) and parents[0].info.status == "FINISHED"
    assert "***@" in parents[0].data.tags["optuna_storage"]  # a password is never recorded


def test_the_seed_makes_a_one_worker_search_reproducible(tmp_path, capfd):
    """The same seed, the same trials: one search in this process, one in a process of its
    own (its own hash seed, its own imports)."""
    seeded = ["search.n_trials=2", "seed=7"]
    here = search_run(capfd, f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", tmp_path, *seeded)[3]
    uri = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    done = run_cli(*command(uri, *seeded), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    apart = study_of(uri, parents_and_children(MlflowClient(uri))[0][0])
    assert [(t.params, t.state.name, t.value) for t in here.trials] == [
        (t.params, t.state.name, t.value) for t in apart.trials
    ]
