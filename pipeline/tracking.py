"""MLflow: the store, experiments, parent and child runs, batched logging, run status.

Everything goes through an explicit ``MlflowClient`` and run id (no fluent "active
run"), so a job's run is never confused with another's in the same process.
"""

import functools
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

DEFAULT_STORE = Path("mlruns")
SWEEP_TAG = "sweep_overrides"  # set on a sweep's parent run only
SQLITE = "sqlite:///"


def tracking_uri(configured: str | None = None) -> str:
    """``tracking.uri`` if set, else $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or SQLITE + str((DEFAULT_STORE / "mlflow.db").resolve())


@functools.cache
def connect(uri: str) -> MlflowClient:
    """A client on ``uri``, one per process; a new SQLite store gets its folder and schema here."""
    if uri.startswith(SQLITE):
        Path(uri.removeprefix(SQLITE)).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # creates the schema of a new store
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if needed, with artifacts beside a SQLite store."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith(SQLITE):
        location = (Path(uri.removeprefix(SQLITE)).parent / "artifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


def start_run(
    client: MlflowClient,
    experiment: str,
    name: str,
    tags: Mapping[str, Any],
    parent_run_id: str | None = None,
) -> str:
    tags = {k: str(v) for k, v in tags.items()}
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    commit = git_commit()
    if commit:
        tags.setdefault("git_commit", commit)
    return client.create_run(experiment, run_name=name, tags=tags).info.run_id


@contextmanager
def run_status(client: MlflowClient, run_id: str) -> Iterator[dict]:
    """End the run FINISHED, KILLED on Ctrl-C, FAILED on an error (with a tag saying why).

    The body may set ``outcome["status"]`` to end the run otherwise (a diverged job).
    """
    outcome = {"status": "FINISHED"}
    try:
        yield outcome
    except KeyboardInterrupt:
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException as error:
        client.set_tag(run_id, "failure_reason", f"{type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, outcome["status"])


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"model": {"depth": 2}} -> {"model.depth": 2}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def log_results(
    client: MlflowClient,
    run_id: str,
    steps: Sequence[int] = (),
    curves: Mapping[str, Sequence[float]] | None = None,
    final: Mapping[str, float] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """Every point of every curve (step = iteration), the final metrics and tags, batched:
    MLflow splits the batch only at its limit of 1,000 metrics a call."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for key, values in (curves or {}).items()
        for step, value in zip(steps, values, strict=True)
    ]
    metrics += [Metric(key, float(value), now, 0) for key, value in (final or {}).items()]
    run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    client.log_batch(run_id, metrics=metrics, tags=run_tags)


def log_dataset(client: MlflowClient, run_id: str, name: str, X: np.ndarray, Y: np.ndarray):
    """The training data as a run input, so the UI's Dataset column shows it."""
    from mlflow.data import from_numpy  # deferred: pulls in a large module tree
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = CodeDatasetSource({"loader": f"pipeline.data ({name}, from scikit-learn)"})
    dataset = from_numpy(X.T, targets=Y.T, name=name, source=source)
    tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value="training")
    inputs = [DatasetInput(dataset._to_mlflow_entity(), [tag])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # Jobs of a sweep that insert the same new data set at the same moment race for its
        # unique key and one loses; its second try finds the data set and only links it.
        client.log_inputs(run_id, datasets=inputs)


def log_files(
    client: MlflowClient, run_id: str, writers: Mapping[str, Callable[[Path], None]]
) -> None:
    """Each artifact written by its writer into one folder, uploaded in one call."""
    with tempfile.TemporaryDirectory() as folder:
        for name, write in writers.items():
            write(Path(folder) / name)
        client.log_artifacts(run_id, folder)


def child_runs(client: MlflowClient, parent_run_id: str, *, running_only: bool = False) -> list:
    """The runs whose parent is ``parent_run_id`` (only those still RUNNING, if asked)."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    if running_only:
        query += " and attributes.status = 'RUNNING'"
    return client.search_runs([experiment], query, max_results=10_000)


def end_running_children(client: MlflowClient, parent_run_id: str, status: str) -> int:
    """End as ``status`` every child of the parent still RUNNING; returns how many."""
    running = child_runs(client, parent_run_id, running_only=True)
    for run in running:
        client.set_terminated(run.info.run_id, status)
    return len(running)


def is_running(client: MlflowClient, run_id: str) -> bool:
    return client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING)


def runs_table_url(base: str, experiment: str) -> str:
    """The UI's runs table (MLflow 3 opens an experiment on its GenAI overview otherwise)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs"


@functools.cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
