"""The tracking layer: experiments, the errors it catches, a parallel sweep's races on a store."""

import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.exceptions import MlflowException

from pipeline import tracking
from tests.helpers import ROOT

# Logs data sets ds0, ds1, ... as inputs of new runs; waits for a start time first, so two
# copies insert the same new data sets at the same moments.
LOG_DATASETS = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pipeline import tracking
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
