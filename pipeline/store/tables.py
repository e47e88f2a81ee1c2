"""Reading runs back from MLflow into pandas: a sweep's table, its counts and its summary.

This module only reads; what a sweep writes on its parent run is ``pipeline.sweep``'s.
"""

import functools
import json
import math
import os
import socket
import statistics
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import psutil
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from pipeline.processes import releases
from pipeline.processes.errors import InputError
from pipeline.store import tracking

# MLflow releases whose SQL store's bulk read of curves (a private name) this was tested with
MLFLOW_TESTED = ("3.",)
JOBS_FILE = "jobs.json"  # a sweep parent's record of its jobs: what a resume runs
LAUNCHER_TAG = "launcher"  # on a sweep's parent: host:pid of the process launching its jobs
STUDY_TAG = "optuna_study"  # on a search's parent and its trials: the Optuna study's name

COLUMNS = {
    "params.model.depth": "depth",
    "params.model.width": "width",
    "params.train.learning_rate": "learning_rate",
    "params.model.activation": "activation",
    "params.train.optimizer": "optimizer",  # runs from before it: gd, full batch, no L2
    "params.train.batch_size": "batch_size",
    "params.train.l2": "l2",
    "metrics.train_cost": "train_cost",
    "metrics.val_cost": "val_cost",
    "metrics.test_cost": "test_cost",
    "metrics.train_accuracy": "train_accuracy",
    "metrics.val_accuracy": "val_accuracy",
    "metrics.test_accuracy": "test_accuracy",
    "metrics.train_seconds": "seconds",
}


def latest_sweep(client: MlflowClient, kind: str | None = None):
    """The newest parent run in the store, or else the newest run, or None. ``kind``:
    "sweep" for the newest grid sweep's parent, "search" for the newest search's (no other
    run then stands in).

    Asked of the store, not picked from a page of runs: a sweep's parent starts before its
    jobs, so after a large sweep it is far down the list of newest runs.
    """
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    newest = functools.partial(
        client.search_runs, experiments, order_by=["attributes.start_time DESC"]
    )
    # LIKE '%': every run that has the tag (IS NOT NULL is newer than some MLflow 3 releases)
    parents = f"tags.`{tracking.SWEEP_TAG}` LIKE '%'"
    if kind == "search":
        parents += f" and tags.`{STUDY_TAG}` LIKE '%'"
    page = newest(parents, max_results=100)
    while page:  # a grid sweep: the newest parent without a study (IS NULL: as above)
        for run in page:
            if kind != "sweep" or STUDY_TAG not in run.data.tags:
                return run
        page = page.token and newest(parents, max_results=100, page_token=page.token)
    runs = [] if kind else newest(max_results=1)
    return runs[0] if runs else None


def job_seconds(client: MlflowClient, experiment_name: str) -> tuple[float, str] | None:
    """(the median seconds a finished job took, the sweep's name) of the latest finished grid
    sweep in experiment ``experiment_name``; None if it has none."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    finished_sweeps = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{tracking.SWEEP_TAG}` LIKE '%' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for parent in finished_sweeps:
        if STUDY_TAG in parent.data.tags:  # a search: its pruned trials end early
            continue
        children = tracking.child_runs(client, parent.info.run_id)
        seconds = [
            (c.info.end_time - c.info.start_time) / 1000
            for c in children
            if c.info.status == "FINISHED" and c.info.end_time
        ]
        if seconds:
            return statistics.median(seconds), parent.info.run_name
    return None


def recorded_jobs(client: MlflowClient, run: Run) -> dict:
    """The parent's jobs.json: its command line's overrides ("argv"), and each job's overrides
    ("jobs"), run name ("names") and config digest ("digests")."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run.info.run_id, JOBS_FILE, folder)
        except (MlflowException, OSError):  # no such artifact
            raise InputError(
                f"{run.info.run_name} has no {JOBS_FILE}: a sweep from before resuming existed"
            ) from None
        return json.loads(Path(path).read_text())


def launcher_id() -> str:
    """This process as the launcher of a sweep's or a search's jobs: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_alive(launcher: str) -> bool | None:
    """Whether the process ``launcher`` (``host:pid``) still runs; None if it runs on another
    host (or is not such an id)."""
    host, _, pid = launcher.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return psutil.pid_exists(int(pid))


def launcher_alive(parent: Run) -> bool | None:
    """Whether the sweep's launching process still runs; None if it ran on another host."""
    return process_alive(parent.data.tags.get(LAUNCHER_TAG, ""))


def unfinished(client: MlflowClient, parent: Run) -> str | None:
    """For a sweep that did not finish, one line: why, which jobs never ran, which were left
    RUNNING, and the command that resumes it; None for a finished sweep or one still running."""
    status, name = parent.info.status, parent.info.run_name
    alive = launcher_alive(parent)
    if status == "FINISHED" or (status == "RUNNING" and alive is not False):
        return None
    why = parent.data.tags.get(tracking.KILLED_REASON) or (
        "its launcher is gone" if status == "RUNNING" else status.lower()
    )
    children = tracking.child_runs(client, parent.info.run_id)
    started = {c.data.tags.get("config_digest") for c in children}
    running = sorted(c.info.run_name for c in children if c.info.status == "RUNNING")
    command = "make sweep"
    if STUDY_TAG in parent.data.tags:  # a search: its trials are not known in advance
        jobs, command = f"{len(children)} trials ran", "make search"
    else:
        jobs = never_ran(client, parent, started)
    left = f"{len(running)} left RUNNING ({', '.join(running)})" if running else "none left RUNNING"
    return (
        f"{name} did not finish ({why}): {jobs}; {left}. "
        f"Resume it: {command} RESUME={parent.info.run_id}"
    )


def never_ran(client: MlflowClient, parent: Run, started: set) -> str:
    """Which of a grid sweep's jobs never ran (``started``: the digests of those that did)."""
    try:
        record = recorded_jobs(client, parent)
    except InputError:
        return "its job list was not recorded"
    names = zip(record["names"], record["digests"], strict=True)
    never = [name for name, digest in names if digest not in started]
    named = ", ".join(never[:6]) + (", ..." if len(never) > 6 else "")
    return f"{len(never)} of {len(record['names'])} jobs never ran ({named or 'none'})"


def chosen_by(table: pd.DataFrame) -> str:
    """The column runs are chosen by: ``val_accuracy``, or ``test_accuracy`` when no run has
    a validation part (val_size=0, or runs recorded before validation existed)."""
    return "val_accuracy" if table.val_accuracy.notna().any() else "test_accuracy"


PRUNED = "PRUNED"  # a table's status for a search's trial its pruner ended (KILLED in MLflow)


def runs_table(runs: list) -> pd.DataFrame:
    """One row per run, best first by ``chosen_by`` (validation accuracy, then validation
    cost; runs without a validation part after the others); metrics are final values.
    The status is MLflow's, or PRUNED for a run a search's pruner ended (tag pruned_at)."""
    rows = []
    for run in runs:
        pruned = tracking.PRUNED_AT in run.data.tags
        row = {"run": run.data.tags.get(MLFLOW_RUN_NAME, "")}
        row["status"] = PRUNED if pruned else run.info.status
        row |= {f"params.{k}": v for k, v in run.data.params.items()}
        row |= {f"metrics.{k}": v for k, v in run.data.metrics.items()}
        row["run_id"] = run.info.run_id
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=["run", "status", *COLUMNS, "run_id"])
    table = table.rename(columns=COLUMNS)
    for column in ("depth", "width", "learning_rate"):
        table[column] = pd.to_numeric(table[column])
    # runs recorded before these keys existed trained with gradient descent, without L2
    table["optimizer"] = table.optimizer.astype(object).fillna("gd")  # all-missing: floats
    table["batch_size"] = pd.to_numeric(table.batch_size, errors="coerce")  # None: full batch
    table["l2"] = pd.to_numeric(table.l2).fillna(0.0)
    accuracy = chosen_by(table)
    cost = accuracy.replace("accuracy", "cost")
    best_first = table.sort_values([accuracy, cost], ascending=[False, True], na_position="last")
    return best_first.reset_index(drop=True)


def sweep_table(client: MlflowClient, parent_run_id: str) -> pd.DataFrame:
    """One row per config of the sweep: its latest attempt (a resumed sweep keeps the
    KILLED or FAILED attempts before it as history)."""
    return runs_table(latest_attempts(tracking.child_runs(client, parent_run_id)))


def latest_attempts(runs: list) -> list:
    """The newest run of each ``config_digest`` (runs without one are kept as they are)."""
    newest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        newest[run.data.tags.get("config_digest", run.info.run_id)] = run
    return list(newest.values())


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many runs ended in each status, FINISHED first: {"FINISHED": 25, "FAILED": 2}."""
    counts = table.status.value_counts()
    order = sorted(counts.index, key=lambda status: (status != "FINISHED", status))
    return {status: int(counts[status]) for status in order}


def sweep_metrics(table: pd.DataFrame) -> dict[str, float]:
    finished = table[table.status == "FINISHED"]
    metrics = {
        "jobs_finished": len(finished),
        "jobs_failed": int((~table.status.isin(["FINISHED", PRUNED])).sum()),
        "jobs_pruned": int((table.status == PRUNED).sum()),
    }
    if len(finished):  # the table is best first
        accuracy = chosen_by(table)
        metrics[f"best_{accuracy}"] = float(finished[accuracy].iloc[0])
        if accuracy != "test_accuracy":  # the chosen run's measure, beside: never a choice
            metrics["best_run_test_accuracy"] = float(finished.test_accuracy.iloc[0])
    return metrics


def best_run_measures(row) -> str:
    """What a best run was chosen by, and its test accuracy beside, for one line of text."""
    if pd.isna(row.val_accuracy):
        return f"test accuracy {row.test_accuracy:.4f}; no validation part"
    return f"validation accuracy {row.val_accuracy:.4f}, test accuracy {row.test_accuracy:.4f}"


def train_cost_curves(client: MlflowClient, run_ids) -> dict[str, tuple[list, list]]:
    """run_id -> (steps, train cost) of each run."""
    return metric_curves(client, run_ids, "train_cost")


def metric_curves(client: MlflowClient, run_ids, key: str) -> dict[str, tuple[list, list]]:
    """run_id -> (steps, values) of metric ``key`` of each run (empty if it has none), in the
    order they were logged."""
    run_ids = list(run_ids)
    history = metric_histories(client, run_ids, key)
    curves = {run_id: ([], []) for run_id in run_ids}
    for run_id, metric in history:
        curves[run_id][0].append(metric.step)
        curves[run_id][1].append(metric.value)
    return curves


@functools.cache
def bulk_read_applies() -> bool:
    """Whether the installed MLflow is one the bulk read of curves was tested with (it reads
    MLflow's private store); if not, one warning line, once."""
    otherwise = "a sweep's curves are read one run at a time (slower, the same points)"
    return releases.tested("mlflow", mlflow.__version__, MLFLOW_TESTED, otherwise)


def metric_histories(client: MlflowClient, run_ids: list[str], key: str) -> list:
    """(run_id, Metric) of every point of metric ``key`` of the runs, grouped by run, each
    ordered by time and step. MLflow's SQL stores read them in one query (a 300-run sweep's
    curves: one query instead of 300, ~50 times faster); others (a server), and MLflow
    releases this was not tested with, one run at a time through the public client."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    bulk = getattr(store, "get_metric_history_bulk", None) if bulk_read_applies() else None
    if bulk is None or not run_ids:
        return [(r, m) for r in run_ids for m in client.get_metric_history(r, key)]
    found = bulk(run_ids, key, max_results=None)
    return [(m.run_id, m) for m in found]


def first_values(client: MlflowClient, run_ids, key: str) -> dict[str, float]:
    """run_id -> metric ``key`` at the run's first step, of the runs that logged it."""
    firsts = {}
    for run_id, metric in metric_histories(client, list(run_ids), key):
        step, _ = firsts.get(run_id, (math.inf, None))
        if metric.step < step:
            firsts[run_id] = (metric.step, metric.value)
    return {run_id: value for run_id, (_, value) in firsts.items()}


def gradient_ratios(client: MlflowClient, table: pd.DataFrame) -> pd.DataFrame:
    """depth, activation and ratio, the first layer's gradient norm over the last layer's
    (grad_norm/W1 / grad_norm/W{depth + 1}) at the first logged point, of each run of
    ``table`` that logged them (none before tracking.dynamics, or with it off)."""
    firsts = first_values(client, table.run_id, "grad_norm/W1")
    logged = table[table.run_id.isin(firsts)]
    lasts = {}
    for depth, runs in logged.groupby("depth"):
        lasts |= first_values(client, runs.run_id, f"grad_norm/W{int(depth) + 1}")
    rows = [
        {
            "depth": int(run.depth),
            "activation": run.activation,
            "ratio": firsts[run.run_id] / lasts[run.run_id] if lasts.get(run.run_id) else math.inf,
        }
        for run in logged.itertuples()
    ]
    return pd.DataFrame(rows, columns=["depth", "activation", "ratio"])


def counts_line(table: pd.DataFrame) -> str:
    """e.g. ``25 finished, 3 pruned, 1 failed, 1 killed`` (FINISHED always named)."""
    counts = {"FINISHED": 0} | status_counts(table)
    return ", ".join(f"{n} {status.lower()}" for status, n in counts.items())


def summary(table: pd.DataFrame, seconds: float, status: str = "FINISHED", top: int = 5) -> str:
    """The sweep's end: its counts, then the best runs."""
    ended = "done in" if status == "FINISHED" else f"{status.lower()} after"
    head = f"sweep {ended} {seconds:.1f}s: {counts_line(table)}"
    finished = table[table.status == "FINISHED"]
    if finished.empty:
        return head
    columns = ["run", "status", "train_cost", "val_cost", "val_accuracy", "test_accuracy"]
    shown = finished.head(top)[[c for c in columns if finished[c].notna().any()] + ["seconds"]]
    return f"{head}\nbest runs:\n{shown.to_string(index=False, float_format='%.4f')}"
