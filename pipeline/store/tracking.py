"""MLflow: the store, experiments, parent and child runs, batched logging, run status.

Everything goes through an explicit ``MlflowClient`` and run id (no fluent "active
run"), so a job's run is never confused with another's in the same process.
"""

import argparse
import fcntl
import functools
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from pipeline.processes.errors import InputError

DEFAULT_STORE = Path("mlruns")
SWEEP_TAG = "sweep_overrides"  # set on a sweep's parent run only
NOTE = "mlflow.note.content"  # a run's description, shown on its page in the UI
KILLED_REASON = "killed_reason"  # why a run ended KILLED
PRUNED_AT = "pruned_at"  # on a search's trial its pruner ended (KILLED): the iteration
SQLITE = "sqlite:///"
# The MLflow UI (3.4+) opens an experiment in its "Model training" mode, not the GenAI one,
# when the experiment carries this tag (3.4 to 3.16) or the address asks for it (3.17).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MODEL_TRAINING = "workflowType=machine_learning"
UI_HOST, UI_PORT = "127.0.0.1", 5000  # where `make ui` and `make server` listen by default


def tracking_uri(configured: str | None = None) -> str:
    """``tracking.uri`` if set, else $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or SQLITE + str((DEFAULT_STORE / "mlflow.db").resolve())


def add_tracking_uri_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--tracking-uri`` option every command line that reads runs shares."""
    parser.add_argument(
        "--tracking-uri", help="the store (default: $MLFLOW_TRACKING_URI or mlruns/mlflow.db)"
    )


ELSEWHERE = "choose another store with tracking.uri=, --tracking-uri or MLFLOW_TRACKING_URI"
# How MLflow says it has no store for a URI's scheme (its tracking and its model registry).
UNKNOWN_SCHEME = ("unsupported URI", "Could not find a registered")


class StoreError(InputError):
    """The store cannot be used (unwritable, corrupt, unknown, a server that does not
    answer); the message names it and what to do."""


@functools.cache
def connect(uri: str) -> MlflowClient:
    """A client on ``uri``, one per process, once the store has answered; a new SQLite store
    gets its folder and schema here. StoreError if the store cannot be used.

    Two processes creating the same new store at once race on its schema (a table or
    column "already exists"): a lock file beside the database lets one create it.
    """
    if not uri.startswith(SQLITE):
        return answering_client(uri)
    database = Path(uri.removeprefix(SQLITE))
    check_sqlite_store(database)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return answering_client(uri)


def answering_client(uri: str) -> MlflowClient:
    """A client whose store has answered (a new store's schema is created by that first call)."""
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as error:  # MLflow's, SQLAlchemy's or the HTTP client's: any means unusable
        raise StoreError(store_problem(uri, error)) from None
    return client


def check_sqlite_store(db: Path) -> None:
    """StoreError unless ``db``'s folder exists or can be made, both can be written, and
    ``db``, if it has any content, is an intact SQLite database."""
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file where a folder should be
        raise StoreError(
            f"cannot make the store's folder {db.parent} ({error.strerror}): {ELSEWHERE}"
        ) from None
    # the folder, the artifacts' folder beside it (see experiment_id) and the database
    for path, folder in ((db.parent, True), (db.parent / "artifacts", True), (db, False)):
        reason = path.exists() and cannot_write(path, folder)
        if reason:
            raise StoreError(f"the store {db} cannot be written ({path}: {reason}): {ELSEWHERE}")
    if db.is_file() and db.stat().st_size:
        try:  # quick_check reads every page: a truncated file fails here, not mid-run
            read_only = f"{db.resolve().as_uri()}?mode=ro"
            with closing(sqlite3.connect(read_only, uri=True)) as connection:
                verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as error:
            verdict = str(error)
        if verdict != "ok":
            raise StoreError(
                f"the store {db} is not an intact SQLite database ({verdict.splitlines()[0]}): "
                f"restore it from a backup, or move it away and a new store is made there"
            )


def cannot_write(path: Path, folder: bool) -> str | None:
    """Why ``path`` (a folder, or a file) cannot be written, or None. A real write: the
    permissions, a read-only file system or an immutable file all show."""
    try:
        if folder:
            with tempfile.TemporaryFile(dir=path):
                pass
        else:
            path.open("r+b").close()  # opened for writing, nothing written
    except OSError as error:
        return error.strerror
    return None


def store_problem(uri: str, error: Exception) -> str:
    """One line on why the store at ``uri`` did not answer, and what to do."""
    scheme = uri.partition("://")[0] if "://" in uri else ""
    if isinstance(error, MlflowException) and any(w in str(error) for w in UNKNOWN_SCHEME):
        return (
            f"tracking.uri={uri} is not a store MLflow knows ({scheme or 'no'} scheme): use "
            f"sqlite:///path/mlflow.db, http://host:port of a tracking server, or a database URL"
        )
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    # MLflow's words when no connection was made (refused, timed out, no such host)
    if scheme in ("http", "https") and "failed with exception" in reason:
        return (
            f"the tracking server {uri} does not answer: start it (`make server`), or {ELSEWHERE}"
        )
    return f"the store {uri} cannot be used ({reason}): {ELSEWHERE}"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if needed, with artifacts beside a SQLite store.

    Experiments open in the UI's "Model training" mode (EXPERIMENT_KIND).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith(SQLITE):
        folder = Path(uri.removeprefix(SQLITE)).parent / "artifacts" / folder_name(name)
        location = folder.resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    return client.get_experiment_by_name(name).experiment_id  # another process created it


def folder_name(name: str) -> str:
    """``name`` as one safe folder name: letters, digits, ``_ - .`` kept, every other run of
    characters (separators included) as ``-``, no leading dot, at most 100 characters.

    Experiment and run names are free text, and a path joined from one (``../../tmp/x``,
    ``/etc``) lands outside the store. Refusing such names would limit users for nothing:
    the name stays as it is in MLflow, only its folder is this slug. Two names that differ
    only in what is replaced share a folder, which is harmless: each run has its own
    subfolder, named by its id.
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lstrip(".")[:100] or "-"


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
    *,
    final_step: int = 0,
    points: Sequence[Metric] = (),
) -> None:
    """Every point of every curve (step = iteration), ``points`` already made, the final
    metrics (at ``final_step``) and tags, in one batch: MLflow splits it only at its limit
    of 1,000 metrics a call."""
    now = int(time.time() * 1000)
    metrics = list(points)
    metrics += [
        Metric(key, float(value), now, step)
        for key, values in (curves or {}).items()
        for step, value in zip(steps, values, strict=True)
    ]
    metrics += [Metric(key, float(value), now, final_step) for key, value in (final or {}).items()]
    run_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
    client.log_batch(run_id, metrics=metrics, tags=run_tags)


class LiveCurves:
    """A training listener that sends a run's logged points to the store while it trains:
    in one batch at most every ``flush_seconds``, the rest with the job's final batch.

    A job shorter than ``flush_seconds`` thus makes no call before its final batch.
    """

    def __init__(self, client: MlflowClient, run_id: str, flush_seconds: float) -> None:
        self.client, self.run_id, self.flush_seconds = client, run_id, flush_seconds
        self.pending: list[Metric] = []  # points not sent yet
        self.flushed_at = time.monotonic()
        self.batches = 0  # sent while training

    def __call__(self, point) -> None:
        """Keep the point's costs (``point.iteration``, ``point.costs``); send if it is time."""
        self.keep(point.iteration, point.costs)
        if time.monotonic() - self.flushed_at >= self.flush_seconds:
            self.flush()

    def keep(self, step: int, metrics: Mapping[str, float]) -> None:
        """Metrics at ``step`` to send with the next batch (another listener's, at a point)."""
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        """Send the points not sent yet, in one batch."""
        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending, self.batches = [], self.batches + 1
        self.flushed_at = time.monotonic()

    def finish(self, final: Mapping[str, float], tags: Mapping[str, Any], final_step: int) -> None:
        """The points not sent yet, the final metrics and the tags, in one batch."""
        log_results(
            self.client, self.run_id, final=final, tags=tags, final_step=final_step,
            points=self.pending,
        )  # fmt: skip
        self.pending = []


def log_dataset(client: MlflowClient, run_id: str, name: str, X: np.ndarray, Y: np.ndarray):
    """The training data as a run input, so the UI's Dataset column shows it."""
    from mlflow.data import from_numpy  # deferred: pulls in a large module tree
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = CodeDatasetSource({"loader": f"pipeline.job.data ({name}, from scikit-learn)"})
    dataset = from_numpy(X.T, targets=Y.T, name=name, source=source)
    tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value="training")
    inputs = [DatasetInput(dataset._to_mlflow_entity(), [tag])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException as error:
        # Jobs of a sweep that insert the same new data set at the same moment race for its
        # unique key and one loses; its second try finds the data set and only links it.
        if not is_duplicate_key(error):
            raise
        client.log_inputs(run_id, datasets=inputs)


# How a unique-key violation reads in SQLite's, PostgreSQL's and MySQL's drivers, as MLflow's
# stores wrap it (over REST only the message survives).
DUPLICATE_KEY = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def is_duplicate_key(error: MlflowException) -> bool:
    return any(text in error.message for text in DUPLICATE_KEY)


def log_files(
    client: MlflowClient, run_id: str, writers: Mapping[str, Callable[[Path], None]]
) -> None:
    """Each artifact written by its writer into one folder, uploaded in one call."""
    with tempfile.TemporaryDirectory() as folder:
        for name, write in writers.items():
            write(Path(folder) / name)
        client.log_artifacts(run_id, folder)


def parent_of(run: Run) -> str | None:
    """The run id of ``run``'s parent (a sweep's), or None for a run of its own."""
    return run.data.tags.get(MLFLOW_PARENT_RUN_ID)


def get_run(client: MlflowClient, run_id: str) -> Run:
    """The run ``run_id``; InputError naming the store if there is none."""
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise InputError(f"run {run_id!r} not found in {client.tracking_uri}") from None


def child_runs(client: MlflowClient, parent_run_id: str, *, running_only: bool = False) -> list:
    """The runs whose parent is ``parent_run_id`` (only those still RUNNING, if asked)."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'"
    if running_only:
        query += " and attributes.status = 'RUNNING'"
    return client.search_runs([experiment], query, max_results=10_000)


def end_killed(client: MlflowClient, run_id: str, why: str | None = None) -> None:
    """End run ``run_id`` KILLED, with a ``killed_reason`` tag saying ``why`` if given."""
    if why:
        log_results(client, run_id, tags={KILLED_REASON: why})
    client.set_terminated(run_id, "KILLED")


def end_running_children(client: MlflowClient, parent_run_id: str, why: str | None = None):
    """End KILLED every child of the parent still RUNNING (see ``end_killed``)."""
    for run in child_runs(client, parent_run_id, running_only=True):
        end_killed(client, run.info.run_id, why)


def is_running(client: MlflowClient, run_id: str) -> bool:
    return client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING)


def ui_address(host: str = UI_HOST, port: int | str | None = None) -> str:
    """Where `make ui` or `make server` serves the UI: $PORT (as in the Makefile) by default."""
    return f"http://{host}:{port or os.environ.get('PORT') or UI_PORT}"  # make exports PORT=''


def experiments_url(base: str | None = None) -> str:
    """The UI's list of experiments, in its "Model training" mode."""
    return f"{(base or ui_address()).rstrip('/')}/#/experiments?{MODEL_TRAINING}"


def runs_table_url(experiment: str, base: str | None = None) -> str:
    """The UI's runs table of ``experiment`` in its "Model training" mode (MLflow 3 opens an
    experiment in its GenAI mode otherwise, whose sidebar has traces, not runs)."""
    return f"{(base or ui_address()).rstrip('/')}/#/experiments/{experiment}/runs?{MODEL_TRAINING}"


@functools.cache
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
