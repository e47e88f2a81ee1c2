"""What a sweep's importance and page cost: the page of a 300-run sweep, and what the page and
the importance add to the end of the default ``make sweep``.

Runs are logged straight into a SQLite store in a temporary folder (no training): each with
a job's params, 101 points of train_cost and val_cost, its final metrics and a decision
boundary. Then, in this process:

- a 300-run search-like sweep (depth 0-4, width 2-128 and learning rate 1e-3-3, log-spaced):
  ``page.findings`` whole (store reads, importance, figures, the page), median of 3 after a
  first call that pays the imports (scikit-learn's forest, Optuna's importance); target <= 5 s;
- the default sweep's 27 runs (3 depths x 3 widths x 3 learning rates): what the parent's end
  did before (``parent_run.record_sweep``) and what it adds now (``page.record_findings``),
  interleaved round by round; target <= 1 s added.
"""

import argparse
import io
import itertools
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_sweep import median_seconds
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param

from pipeline.store import plots, tables, tracking
from pipeline.sweeps import page, parent_run

POINTS = 101  # the default job's: 2000 iterations, log_every 20


def boundary_png() -> bytes:
    fig = Figure(figsize=(5, 5))
    fig.add_subplot().imshow(np.random.default_rng(0).random((100, 100)))
    buffer = io.BytesIO()
    plots.save_png(fig, buffer)
    return buffer.getvalue()


def log_sweep(client, name: str, configs: list[tuple[int, int, float]]) -> str:
    """A parent run and one FINISHED child per (depth, width, learning rate), the best with a
    decision boundary (the one the page shows); the parent's run id."""
    experiment = tracking.experiment_id(client, "bench")
    parent = parent_run.create(client, experiment, name, [], "bench", {}).run_id
    steps = list(range(0, 2001, 20))
    rng = np.random.default_rng(0)
    best = (-1.0, "")
    for depth, width, rate in configs:
        tags = {"mlflow.parentRunId": parent, "mlflow.runName": f"d{depth}-w{width}-lr{rate:.3g}"}
        run_id = client.create_run(experiment, tags=tags).info.run_id
        params = {
            "seed": 0,
            "model.depth": depth,
            "model.width": width,
            "n_val": 150,
            "train.learning_rate": rate,
            "model.activation": "relu",
        }
        speed = min(rate, 1.0) / 300
        train = [0.65 * math.exp(-speed * s) + 0.04 for s in steps]
        accuracy = 0.5 + 0.45 * (1 - math.exp(-speed * 2000)) + rng.normal(0, 0.01)
        final = {
            "val_accuracy": accuracy,
            "test_accuracy": accuracy - 0.01,
            "train_accuracy": accuracy + 0.01,
            "val_cost": train[-1] + 0.02,
            "train_cost": train[-1],
            "test_cost": train[-1] + 0.03,
            "train_seconds": 1.0,
        }
        metrics = [
            Metric(k, v, 0, step)
            for k, values in {"train_cost": train, "val_cost": [c + 0.02 for c in train]}.items()
            for step, v in zip(steps, values, strict=True)
        ]
        metrics += [Metric(k, v, 0, steps[-1]) for k, v in final.items()]
        client.log_batch(
            run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()]
        )
        client.set_terminated(run_id, "FINISHED")
        best = max(best, (accuracy, run_id))
    png = boundary_png()
    tracking.log_files(client, best[1], {page.BOUNDARY: lambda path: path.write_bytes(png)})
    return parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        client = tracking.connect(f"sqlite:///{tmp}/mlflow.db")
        rng = np.random.default_rng(0)
        search = [
            (
                int(rng.integers(0, 5)),
                int(np.exp(rng.uniform(np.log(2), np.log(128)))),
                float(np.exp(rng.uniform(np.log(1e-3), np.log(3)))),
            )
            for _ in range(args.runs)
        ]
        grid = list(itertools.product([3, 2, 1], [64, 16, 4], [0.01, 0.1, 1.0]))
        started = time.perf_counter()
        big, default = log_sweep(client, "search", search), log_sweep(client, "default", grid)
        print(
            f"sweep page and importance ({args.runs} + 27 runs logged in "
            f"{time.perf_counter() - started:.0f} s, SQLite store):"
        )

        def build(parent: str) -> page.Findings:
            run = client.get_run(parent)
            runs = tables.latest_attempts(tracking.child_runs(client, parent))
            table = tables.runs_table(runs)
            return page.findings(client, runs, table, run.info.run_name, page.search_space(run))

        first = median_seconds(lambda: build(default), 1)
        found = build(big)
        seconds = median_seconds(lambda: build(big), 3)
        print(f"  first call in a process (imports):     {first:6.2f} s")
        print(
            f"  page of a {args.runs}-run sweep, whole, median of 3: {seconds:6.2f} s "
            f"(target <= 5 s); page {len(found.page.encode()) / 1e6:.2f} MB"
        )

        parent = parent_run.Parent(default, "0", client.tracking_uri, 27)
        table = tables.sweep_table(client, default)
        before = lambda: parent_run.record_sweep(client, parent, table, "bench")  # noqa: E731
        added = lambda: page.record_findings(client, default, table)  # noqa: E731
        rounds = {"before": [], "added": []}
        for _ in range(args.rounds):  # interleaved: the machine's load hits both alike
            rounds["before"].append(median_seconds(before, 1))
            rounds["added"].append(median_seconds(added, 1))
        was, more = (statistics.median(rounds[k]) for k in ("before", "added"))
        size = Path(client.download_artifacts(default, page.PAGE, tmp)).stat().st_size
        print(
            f"  default sweep's end, medians of {args.rounds}: parent's record {was:5.2f} s, "
            f"+ importance and page {more:5.2f} s (target <= 1 s added; "
            f"{(was + more) / was:.2f}x the parent's end); page {size / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
