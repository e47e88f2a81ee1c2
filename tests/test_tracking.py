"""The tracking layer: experiments, the errors it catches, a parallel sweep's races on a store."""

import subprocess
import sys
import textwrap
import time

import mlflow
import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from pipeline.job.loop import Point
from pipeline.store import tables, tracking
from pipeline.sweeps import parent_run
from tests.helpers import ROOT

# Logs data sets ds0, ds1, ... as inputs of new runs; waits for a start time first, so two
# copies insert the same new data sets at the same moments.
LOG_DATASETS = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pipeline.store import tracking
    uri, experiment, start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    client = tracking.connect(uri)
    X, Y = np.zeros((2, 8)), np.ones((1, 8))
    runs = [tracking.start_run(client, experiment, f"r{i}", {}) for i in range(n)]
    time.sleep(max(0.0, start - time.time()))
    for i, run_id in enumerate(runs):
        tracking.log_dataset(client, run_id, f"ds{i}", X, Y)
""")


@pytest.mark.slow
def test_two_processes_logging_the_same_new_data_sets_both_succeed(store):
    uri, client = store
    experiment = tracking.experiment_id(tracking.connect(uri), "race")
    n, start = 30, time.time() + 6  # both processes are ready by then
    command = [sys.executable, "-c", LOG_DATASETS, uri, experiment, str(start), str(n)]
    processes = [
        subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    runs = client().search_runs([experiment], max_results=100)
    assert len(runs) == 2 * n
    assert all(len(run.inputs.dataset_inputs) == 1 for run in runs)
    # each data set stored once, shared by the two runs that logged it
    datasets = {(i.dataset.name, i.dataset.digest) for r in runs for i in r.inputs.dataset_inputs}
    assert len(datasets) == n


def test_experiments_open_in_the_model_training_mode(store):
    uri, client = store
    experiment = tracking.experiment_id(tracking.connect(uri), "kind")
    assert client().get_experiment(experiment).tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )
    assert tracking.experiment_id(tracking.connect(uri), "kind") == experiment  # found again


def test_only_the_races_own_errors_are_caught(store):
    uri, _ = store
    with pytest.raises(MlflowException, match="name"):  # not a race: an invalid name
        tracking.experiment_id(tracking.connect(uri), "")
    duplicate = "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id"
    assert tracking.is_duplicate_key(MlflowException(duplicate))
    assert not tracking.is_duplicate_key(MlflowException("Run with id=feedbeef not found"))


def test_live_curves_send_points_in_batches_only_when_due(store):
    uri, client = store
    experiment = tracking.experiment_id(tracking.connect(uri), "live")
    points = [Point(i, {"train_cost": 1.0 / (i + 1), "val_cost": 2.0}, {}, False) for i in range(5)]

    def stored(run_id):
        return [(m.step, m.value) for m in client().get_metric_history(run_id, "train_cost")]

    # a job shorter than flush_seconds: nothing before its one final batch
    quiet_run = tracking.start_run(tracking.connect(uri), experiment, "quiet", {})
    quiet = tracking.LiveCurves(tracking.connect(uri), quiet_run, flush_seconds=3600)
    for point in points:
        quiet(point)
    assert stored(quiet_run) == [] and quiet.batches == 0
    quiet.finish({"train_accuracy": 0.9}, {"done": "yes"}, final_step=4)
    assert stored(quiet_run) == [(p.iteration, p.costs["train_cost"]) for p in points]
    run = client().get_run(quiet_run)
    assert run.data.metrics["train_accuracy"] == 0.9 and run.data.tags["done"] == "yes"
    assert client().get_metric_history(quiet_run, "train_accuracy")[0].step == 4

    # due at every point: each point is in the store as soon as it is logged
    live_run = tracking.start_run(tracking.connect(uri), experiment, "live", {})
    live = tracking.LiveCurves(tracking.connect(uri), live_run, flush_seconds=1e-9)
    for n, point in enumerate(points, start=1):
        live(point)
        assert len(stored(live_run)) == n and live.batches == n
    live.finish({}, {}, final_step=4)
    assert len(stored(live_run)) == 5  # nothing sent twice


def test_a_run_left_running_ends_as_its_results_say_when_a_sweep_is_resumed(store):
    """A job stopped between its last write (the final_status tag) and its status ends with
    that status, not KILLED: a resume does not run it again. One stopped before it is KILLED."""
    uri, client = store
    client = tracking.connect(uri)
    experiment = tracking.experiment_id(client, "left")
    parent = tracking.start_run(client, experiment, "sweep", {tracking.SWEEP_TAG: "x"})
    complete, _ = (
        tracking.start_run(client, experiment, name, {"config_digest": name}, parent)
        for name in ("complete", "cut")
    )
    tracking.log_results(client, complete, final={"test_accuracy": 0.9})
    client.set_tag(complete, "final_status", "FINISHED")  # its last write
    parent_run.join(client, client.get_run(parent))  # no other process works on it: reopened
    ended = {r.info.run_name: r for r in tracking.child_runs(client, parent)}
    assert ended["complete"].info.status == "FINISHED"
    assert "killed_reason" not in ended["complete"].data.tags
    assert ended["cut"].info.status == "KILLED"
    assert ended["cut"].data.tags["killed_reason"] == "its launcher stopped before the job ended"
    assert parent_run.finished_digests(client, parent) == {"complete"}


def test_a_tracking_uri_holding_a_password_is_refused_in_one_line_without_it(tmp_path, capsys):
    from pipeline import report
    from tests.helpers import assert_one_error_line, call_main

    uri = "http://ada:s3cret-Pw@127.0.0.1:9"  # would be recorded with the config: refused
    argv = ["--tracking-uri", uri, "--out", str(tmp_path / "reports")]
    refused = call_main(capsys, report.main, *argv)
    assert_one_error_line(refused, "http://ada:***@127.0.0.1:9", "MLFLOW_TRACKING_PASSWORD")
    assert not (tmp_path / "reports").exists()


def test_curves_read_in_one_query_are_those_read_run_by_run(store, monkeypatch, caplog):
    """The bulk read goes through MLflow's private store, for the releases it was tested
    with; any other release reads run by run through the public client, with one warning."""
    _, client = store
    experiment = tracking.experiment_id(client(), "curves")
    runs = [tracking.start_run(client(), experiment, f"r{i}", {}) for i in range(3)]
    for i, run_id in enumerate(runs):
        points = [Metric("train_cost", 1.0 / (i + step + 1), 0, step) for step in range(0, 50, 5)]
        client().log_batch(run_id, metrics=points)
    bulk = tables.metric_histories(client(), runs, "train_cost")

    tables.bulk_read_applies.cache_clear()
    monkeypatch.setattr(tables, "MLFLOW_TESTED", ("0.0.",))
    with caplog.at_level("WARNING", logger=tables.__name__):
        one_by_one = tables.metric_histories(client(), runs, "train_cost")
    tables.bulk_read_applies.cache_clear()
    assert [record.getMessage() for record in caplog.records] == [
        f"warning: mlflow {mlflow.__version__} is not one this project was tested with (0.0.x): "
        "a sweep's curves are read one run at a time (slower, the same points)"
    ]
    pairs = sorted((run_id, m.step, m.value) for run_id, m in bulk)  # runs in either order
    assert len(pairs) == 30 and pairs == sorted((r, m.step, m.value) for r, m in one_by_one)
