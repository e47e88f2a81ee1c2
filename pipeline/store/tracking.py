"""MLflow: the store, experiments, parent and child runs, batched logging, run status.

Everything goes through an explicit ``MlflowClient`` and run id (no fluent "active
run"), so a job's run is never confused with another's in the same process.
"""

import argparse
import errno
import fcntl
import functools
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from pipeline.processes.errors import InputError, first_line, shortened
from pipeline.processes.workers import Guard
from pipeline.store import auth

DEFAULT_STORE = Path("mlruns")
SWEEP_TAG = "sweep_overrides"  # set on a sweep's parent run only
NOTE = "mlflow.note.content"  # a run's description, shown on its page in the UI
KILLED_REASON = "killed_reason"  # why a run ended KILLED
TAG_LIMIT = 5000  # characters of an error kept in a run's tag
FAILURE_REASON = "failure_reason"  # why a run ended FAILED
# A job's last write, just before its status: the status its final results give it. A run
# left RUNNING with it holds them all (tracking.end_left_running).
FINAL_STATUS = "final_status"
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
# SQLite in memory (sqlite://, sqlite:///, sqlite:///:memory:): one database per process.
IN_MEMORY = re.compile(r"sqlite(\+\w+)?://(/(:memory:)?)?(\?.*)?")
DATABASE_SERVERS = ("postgresql", "mysql", "mssql")  # the SQLAlchemy dialects MLflow runs on


class StoreError(InputError):
    """The store cannot be used (unwritable, corrupt, unknown, a server that does not
    answer); the message names it and what to do."""


@functools.cache
def connect(uri: str, read_only: bool = False) -> MlflowClient:
    """A client on ``uri``, one per process, once the store has answered; a new SQLite store
    gets its folder and schema here. StoreError if the store cannot be used. ``read_only``:
    an existing SQLite store is only read (an archived or shared one may be read-only).

    Two processes creating the same new store at once race on its schema (a table or
    column "already exists"): a lock file beside the database lets one create it.
    """
    if auth.password_in_uri(uri):
        raise StoreError(auth.password_in_uri(uri))
    if IN_MEMORY.fullmatch(uri):
        raise StoreError(
            f"tracking.uri={uri} is a database in memory: its runs would be gone when the "
            "process ends, and each of a sweep's jobs would have its own: give a file, e.g. "
            f"{SQLITE}mlruns/mlflow.db"
        )
    if not uri.startswith(SQLITE):
        if uri.partition("://")[0].split("+")[0] in DATABASE_SERVERS:
            check_database_server(uri)
        return answering_client(uri)
    database = Path(uri.removeprefix(SQLITE))
    if read_only and database.is_file():  # nothing to create: no folder, no lock
        check_intact(database)
        return answering_client(uri)
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
        raise StoreError(auth.refusal(error, uri, "read") or store_problem(uri, error)) from None
    return client


@contextmanager
def allowed(uri: str, what: str) -> Iterator[None]:
    """StoreError, one line naming the user and ``what`` was refused, if the tracking server
    at ``uri`` refuses this process's user inside the block."""
    try:
        yield
    except MlflowException as error:
        line = auth.refusal(error, uri, what)
        if line is None:
            raise
        raise StoreError(line) from None


def check_database_server(uri: str) -> None:
    """StoreError unless the database server at ``uri`` answers and lets us in, tried once:
    MLflow tries a new store's database 10 times over about 100 s, whatever the error. A
    server that does not answer at all is bounded by the driver's own connect timeout
    (libpq's PGCONNECT_TIMEOUT, which the entry points set)."""
    import sqlalchemy  # deferred, as MLflow defers it: SQLite stores do without it here
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
        with engine.connect():
            pass
    except Exception as error:  # the driver's, SQLAlchemy's, or a driver not installed
        raise StoreError(store_problem(uri, error)) from None
    engine.dispose()


def check_sqlite_store(db: Path) -> None:
    """StoreError unless ``db``'s folder exists or can be made, both can be written, and
    ``db``, if it has any content, is an intact SQLite database."""
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file where a folder should be
        raise StoreError(
            f"cannot make the store's folder {db.parent} ({error.strerror}): {ELSEWHERE}"
        ) from None
    reason = sqlite_unwritable(db)
    if reason:
        raise StoreError(f"the store {db} cannot be written ({reason}): {ELSEWHERE}")
    check_intact(db)


def check_intact(db: Path) -> None:
    """StoreError if ``db`` has content but is not an intact SQLite database."""
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


def unwritable(uri: str) -> str | None:
    """Why the store at ``uri`` cannot be written (``<path>: <reason>``), or None; a store
    that is no SQLite file answers for itself when written to."""
    return sqlite_unwritable(Path(uri.removeprefix(SQLITE))) if uri.startswith(SQLITE) else None


def sqlite_unwritable(db: Path) -> str | None:
    """Why the SQLite store ``db`` cannot be written: its folder, the artifacts' folder beside
    it (see experiment_id) or the database; None if each that exists can be."""
    for path, folder in ((db.parent, True), (db.parent / "artifacts", True), (db, False)):
        reason = path.exists() and cannot_write(path, folder)
        if reason:
            return f"{path}: {reason}"
    return None


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
    # without SQLAlchemy's "(psycopg.OperationalError) " before the driver's words
    reason = re.sub(r"^\([\w.]+\) ", "", first_line(error, type(error).__name__))
    # MLflow's words when no connection was made (refused, timed out, no such host)
    if scheme in ("http", "https") and "failed with exception" in reason:
        return (
            f"the tracking server {uri} does not answer: start it (`make server`), or {ELSEWHERE}"
        )
    return f"the store {uri} cannot be used ({reason}): {ELSEWHERE}"


class FullStoreError(StoreError):
    """The store's disk is full; the message says what was left and what to do."""


# How SQLite (SQLITE_FULL) and the OS (ENOSPC) say a disk is full, as MLflow, SQLAlchemy or
# a tracking server pass it on.
FULL_DISK = ("database or disk is full", "No space left on device")


def full_disk(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says the disk is full."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(words in str(error) for words in FULL_DISK):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def full_disk_error_line(error: BaseException) -> str | None:
    """One line for ``error`` if it says the disk is full (the store's, before any job ran);
    None for any other error."""
    if not full_disk(error):
        return None
    return f"the store's disk is full ({first_line(error)}): free space, then run it again"


def full_disk_line(uri: str, then: str) -> str:
    """One line saying the disk of the store at ``uri`` is full, and ``then`` what to do."""
    where = Path(uri.removeprefix(SQLITE)).parent if uri.startswith(SQLITE) else uri
    return f"the store's disk is full: {where}: {then}"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if needed, with artifacts beside a SQLite store.

    Experiments open in the UI's "Model training" mode (EXPERIMENT_KIND). On a tracking
    server, StoreError naming the user if it may not write to an existing one.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        check_writable(client, experiment.experiment_id, f"write to experiment {name!r}")
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


def check_writable(client: MlflowClient, experiment: str, what: str) -> None:
    """On a tracking server, StoreError naming the user and ``what`` it was refused unless it
    may write to ``experiment``: checked before anything is created, by writing its kind tag
    again (a write that changes nothing)."""
    if client.tracking_uri.startswith(("http:", "https:")):
        with allowed(client.tracking_uri, what):
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(experiment, key, value)


def write_refused(client: MlflowClient, run_id: str) -> str | None:
    """Why this user may not write to run ``run_id`` on a tracking server, or None."""
    try:
        check_writable(client, client.get_run(run_id).info.experiment_id, f"write to run {run_id}")
    except StoreError as refused:
        return str(refused)
    return None


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


class RunGuard:
    """A process's run in flight, and its writes that decide its status, ordered against
    another thread that ends it (a sweep's worker whose launcher died: stops.watch_launcher).

    The run is created, and writes its final results and status (``run_status``), holding
    ``lock``; the thread ending it takes ``lock`` and keeps it until the process exits. So
    it finds ``run_id``, the run in flight, before its last write or not at all, never
    between its last write and its status.
    """

    def __init__(self, held: Guard | None = None) -> None:
        self.held = held or Guard()  # a sweep's worker's: its watcher takes the same lock

    def start_run(self, client: MlflowClient, *args, **kwargs) -> str:
        """``start_run(client, ...)``, the run in flight from now on."""
        with self.held.lock:
            self.held.run_id = start_run(client, *args, **kwargs)
        return self.held.run_id

    @contextmanager
    def run_status(
        self,
        client: MlflowClient,
        run_id: str,
        stop_reason: Callable[[], str | None] = lambda: None,
    ) -> Iterator[dict]:
        """End the run FINISHED, KILLED on Ctrl-C (tagged with ``stop_reason()``, if any),
        FAILED on an error (with a tag saying why).

        The body may set ``outcome["status"]`` to end the run otherwise (a diverged job), and
        ``outcome["results"]``, a function writing its final results: it, the FINAL_STATUS
        tag and the status are written as one, holding ``lock``.
        """
        outcome = {"status": "FINISHED", "results": lambda: None}
        try:
            yield outcome
            with self.held.lock:
                outcome["results"]()
                client.set_tag(run_id, FINAL_STATUS, outcome["status"])  # the last write
                self._end(client, run_id, outcome["status"])
        except KeyboardInterrupt:
            why = stop_reason()
            with self.held.lock:
                if why:
                    with suppress(Exception):  # a busy store may lose the reason, never the status
                        log_results(client, run_id, tags={KILLED_REASON: why})
                self._end(client, run_id, "KILLED")
            raise
        except BaseException as error:
            with self.held.lock:
                reason = shortened(f"{type(error).__name__}: {error}", TAG_LIMIT)
                client.set_tag(run_id, FAILURE_REASON, reason)
                self._end(client, run_id, "FAILED")
            raise

    def _end(self, client: MlflowClient, run_id: str, status: str) -> None:
        client.set_terminated(run_id, status)
        self.held.run_id = None


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
            self.client,
            self.run_id,
            final=final,
            tags=tags,
            final_step=final_step,
            points=self.pending,
        )
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
    """End every child of the parent still RUNNING (``end_left_running``)."""
    for run in child_runs(client, parent_run_id, running_only=True):
        end_left_running(client, run, why)


def end_left_running(
    client: MlflowClient, run: Run, why: str | None = None, unfinished: str = "KILLED"
) -> str:
    """End a job's run that its process left RUNNING (stopped, killed, its launcher gone), as
    its results say: with the status its final results were written with if they all were
    (FINAL_STATUS: the process stopped between its last write and its status), else
    ``unfinished`` (KILLED, or FAILED), tagged with ``why`` (``killed_reason`` or
    ``failure_reason``); the status it ends with. Whether a job finished is decided here only.
    """
    status = run.data.tags.get(FINAL_STATUS)
    if status is None:
        status = unfinished
        if why:
            reason = KILLED_REASON if status == "KILLED" else FAILURE_REASON
            log_results(client, run.info.run_id, tags={reason: why})
    client.set_terminated(run.info.run_id, status)
    return status


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
