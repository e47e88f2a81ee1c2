"""``python -m pipeline.report``: a sweep's outcome as a table and plots, by default the latest.

    python -m pipeline.report [--sweep PARENT_RUN_ID | --experiment NAME | --run RUN_ID]

Writes ``runs.csv``, ``runs.md`` (best first by validation accuracy), ``cost_curves.png``
(one panel per depth, coloured by learning rate) and ``accuracy_heatmap.png`` (validation
accuracy over depth x width, one panel per learning rate), and the sweep's importance and
page (``pipeline.sweeps.page``: importance.json, report.html, its figures) to
``reports/<name>/``, prints the best rows, and logs the files as artifacts of the sweep's
parent run (under ``report/``), so they also show in the UI, unless the store cannot be
written (an archived or shared store is only read). Runs without a validation part (val_size=0)
are chosen by test accuracy, as before validation existed.
"""

import argparse
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from pipeline.processes import entry
from pipeline.processes.errors import InputError
from pipeline.store import plots, tables, tracking
from pipeline.sweeps import page

SHOWN = [
    *("run", "status", "depth", "width", "learning_rate", "optimizer", "batch_size", "l2"),
    *("train_cost", "val_cost", "test_cost", "train_accuracy", "val_accuracy", "test_accuracy"),
    "seconds",
]


def select_runs(client: MlflowClient, args: argparse.Namespace) -> tuple[str, list, str | None]:
    """(report name, the runs, the parent run id to log the report to, if any)."""
    if args.experiment:
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise InputError(f"no experiment named {args.experiment!r} in {client.tracking_uri}")
        runs = client.search_runs([experiment.experiment_id], max_results=10_000)
        jobs = [r for r in runs if tracking.SWEEP_TAG not in r.data.tags]
        return args.experiment, jobs, None
    run_id = args.sweep or args.run
    if run_id is None:
        latest = tables.latest_sweep(client)
        if latest is None:
            raise InputError(f"the store {client.tracking_uri} has no runs: run `make sweep` first")
        run_id = latest.info.run_id
    run = tracking.get_run(client, run_id)
    if tracking.SWEEP_TAG in run.data.tags:
        return (
            run.info.run_name,
            tables.latest_attempts(tracking.child_runs(client, run_id)),
            run_id,
        )
    if args.sweep:
        raise InputError(f"run {run_id} is not a sweep's parent run: use --run")
    return run.info.run_name, [run], None


def to_markdown(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


def write_report(
    client: MlflowClient, table: pd.DataFrame, folder: Path, findings: Callable[[Path], None]
) -> list[Path]:
    """The report's files in ``folder``, with those ``findings`` writes (the importance, the
    page), each replaced whole: they are written into a new folder beside it first, so that a
    failure (a full disk) leaves ``folder`` as it was."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write_files(client, table, staging)
        findings(staging)
        folder.mkdir(exist_ok=True)
        for file in staging.iterdir():
            os.replace(file, folder / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(folder.iterdir())


def write_files(client: MlflowClient, table: pd.DataFrame, folder: Path) -> None:
    (folder / "runs.csv").write_text(table.to_csv(index=False))
    (folder / "runs.md").write_text(to_markdown(table[SHOWN]))
    curves = tables.train_cost_curves(client, table.run_id)
    plots.save_png(plots.curves_by_depth(table, curves), folder / "cost_curves.png")
    heatmap = plots.accuracy_heatmaps(table, tables.chosen_by(table))
    plots.save_png(heatmap, folder / "accuracy_heatmap.png")


def output_problem(out: str, error: OSError) -> str:
    """One line on why the report's folder ``out`` (--out) cannot be written."""
    if error.errno == errno.ENOSPC:
        return f"the disk of {out} is full: free space, or write the report elsewhere with --out"
    return f"cannot write the report in {out} ({error.strerror}): choose another folder with --out"


@entry.point()
def main(argv: list[str] | None = None) -> int:
    """The report of the command line ``argv``; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="PARENT_RUN_ID", help="a sweep (default: the latest)")
    which.add_argument("--experiment", metavar="NAME", help="every job of an experiment")
    which.add_argument("--run", metavar="RUN_ID", help="a single run")
    parser.add_argument("--out", default="reports", help="folder for the report (default reports/)")
    parser.add_argument("--top", type=int, default=10, help="rows printed (default 10)")
    tracking.add_tracking_uri_argument(parser)
    args = parser.parse_args(argv)
    client = tracking.connect(tracking.tracking_uri(args.tracking_uri), read_only=True)
    name, runs, parent = select_runs(client, args)
    note = parent and tables.unfinished(client, client.get_run(parent))
    if note:
        print(note, flush=True)
    if not runs:
        raise InputError(f"{name} has no runs to report")
    table = tables.runs_table(runs)
    space = page.search_space(client.get_run(parent)) if parent else None
    found = page.findings(client, runs, table, name, space)
    try:
        folder = Path(args.out) / tracking.folder_name(name)
        files = write_report(client, table, folder, found.write)
    except OSError as error:
        raise InputError(output_problem(args.out, error)) from None
    print(f"{name}: {len(table)} runs, {tables.counts_line(table)}")
    print(table[SHOWN].head(args.top).to_string(index=False, float_format="%.4f"))
    print(found.importance.line.replace("**", ""))
    print(f"report written to {files[0].parent}/: {', '.join(f.name for f in files)}")
    if not parent:
        return 0
    read_only = tracking.unwritable(client.tracking_uri)
    refused = not read_only and tracking.write_refused(client, parent)
    if read_only:
        print(f"not logged to the sweep's parent run: the store cannot be written ({read_only})")
    elif refused:
        print(f"not logged to the sweep's parent run: {refused}")
    else:
        client.log_artifacts(parent, str(files[0].parent), artifact_path="report")
        print(f"and logged to the sweep's parent run {parent} under report/")
    return 0


if __name__ == "__main__":
    sys.exit(entry.run(main))
