"""Reading runs back from MLflow into pandas: a sweep's table, its counts and its summary.

This module only reads; what a sweep writes on its parent run is ``pipeline.sweep``'s.
"""

import functools

import pandas as pd
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from pipeline import tracking

COLUMNS = {
    "params.model.depth": "depth",
    "params.model.width": "width",
    "params.train.learning_rate": "learning_rate",
    "metrics.train_cost": "train_cost",
    "metrics.test_cost": "test_cost",
    "metrics.train_accuracy": "train_accuracy",
    "metrics.test_accuracy": "test_accuracy",
    "metrics.train_seconds": "seconds",
}


def latest_sweep(client: MlflowClient):
    """The newest parent run (a sweep) in the store, or else the newest run, or None.

    Asked of the store, not picked from a page of runs: a sweep's parent starts before its
    jobs, so after a large sweep it is far down the list of newest runs.
    """
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    newest = functools.partial(
        client.search_runs, experiments, order_by=["attributes.start_time DESC"], max_results=1
    )
    # LIKE '%': every run that has the tag (IS NOT NULL is newer than some MLflow 3 releases)
    runs = newest(f"tags.`{tracking.SWEEP_TAG}` LIKE '%'") or newest()
    return runs[0] if runs else None


def runs_table(runs: list) -> pd.DataFrame:
    """One row per run, best first (test accuracy, then test cost); metrics are final values."""
    rows = []
    for run in runs:
        row = {"run": run.data.tags.get(MLFLOW_RUN_NAME, ""), "status": run.info.status}
        row |= {f"params.{k}": v for k, v in run.data.params.items()}
        row |= {f"metrics.{k}": v for k, v in run.data.metrics.items()}
        row["run_id"] = run.info.run_id
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=["run", "status", *COLUMNS, "run_id"])
    table = table.rename(columns=COLUMNS)
    for column in ("depth", "width", "learning_rate"):
        table[column] = pd.to_numeric(table[column])
    best_first = table.sort_values(
        ["test_accuracy", "test_cost"], ascending=[False, True], na_position="last"
    )
    return best_first.reset_index(drop=True)


def sweep_table(client: MlflowClient, parent_run_id: str) -> pd.DataFrame:
    return runs_table(tracking.child_runs(client, parent_run_id))


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many runs ended in each status, FINISHED first: {"FINISHED": 25, "FAILED": 2}."""
    counts = table.status.value_counts()
    order = sorted(counts.index, key=lambda status: (status != "FINISHED", status))
    return {status: int(counts[status]) for status in order}


def sweep_metrics(table: pd.DataFrame) -> dict[str, float]:
    finished = table[table.status == "FINISHED"]
    metrics = {
        "jobs_finished": len(finished),
        "jobs_failed": int((table.status != "FINISHED").sum()),
    }
    if len(finished):
        metrics["best_test_accuracy"] = float(finished.test_accuracy.max())
    return metrics


def train_cost_curves(client: MlflowClient, run_ids) -> dict[str, tuple[list, list]]:
    """run_id -> (steps, train cost) of each run."""
    curves = {}
    for run_id in run_ids:
        history = client.get_metric_history(run_id, "train_cost")
        curves[run_id] = ([m.step for m in history], [m.value for m in history])
    return curves


def summary(table: pd.DataFrame, seconds: float, top: int = 5) -> str:
    counts = sweep_metrics(table)
    head = f"sweep done in {seconds:.1f}s: {counts['jobs_finished']} finished, "
    head += f"{counts['jobs_failed']} failed"
    if table.empty:
        return head
    shown = table.head(top)[
        ["run", "status", "train_cost", "test_cost", "test_accuracy", "seconds"]
    ]
    return f"{head}\nbest runs:\n{shown.to_string(index=False, float_format='%.4f')}"
