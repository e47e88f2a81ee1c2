"""What pruning saves a search, and what it costs it: the same search with the median pruner
and with none, side by side.

For each pruner, ``make search`` as a user runs it (``python -m pipeline.search``, its two
workers) in a fresh store, on a data set whose jobs take a while (digits, 2,000 iterations):
  - the training iterations spent: over its trials, the last iteration each one logged
    (a pruned trial's is where it stopped; a diverged one's, its last finite point);
  - the wall time of the whole command;
  - the best validation accuracy found (what the search maximises).
Targets: pruning spends at most 0.6 of the iterations of the search without it, and finds
a best validation accuracy within 0.01 of it. With --repeat, the medians.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from pipeline import tracking

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS_TARGET, ACCURACY_TARGET = 0.6, 0.01


def one_search(pruner: str, trials: int, dataset: str, workers: int) -> dict[str, float]:
    """A search in a subprocess on a fresh store: its iterations, seconds, best accuracy."""
    store = Path(tempfile.mkdtemp(prefix="bench-search-")) / "mlflow.db"
    uri = tracking.SQLITE + str(store)
    command = [sys.executable, "-m", "pipeline.search", f"search.n_trials={trials}",
               f"search.pruner={pruner}", f"search.workers={workers}", f"dataset={dataset}",
               f"tracking.uri={uri}"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"error: the search with pruner {pruner} failed: {done.stderr[-2000:]}")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(dataset).experiment_id  # tracking.experiment
    parent = next(r for r in client.search_runs([experiment]) if tracking.SWEEP_TAG in r.data.tags)
    children = tracking.child_runs(client, parent.info.run_id)
    spent = sum(max(m.step for m in client.get_metric_history(c.info.run_id, "train_cost"))
                for c in children)  # fmt: skip
    finished = [c for c in children if c.info.status == "FINISHED"]
    return {
        "iterations": spent,
        "seconds": seconds,
        "best_val_accuracy": max(c.data.metrics["val_accuracy"] for c in finished),
        "pruned": sum("pruned_at" in c.data.tags for c in children),
        "trials": len(children),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="searches of each (medians)")
    args = parser.parse_args()
    runs = {pruner: [] for pruner in ("median", "none")}
    for _ in range(args.repeat):
        for pruner, results in runs.items():  # alternated: the machine's load falls on both
            results.append(one_search(pruner, args.trials, args.dataset, args.workers))
            print(f"  {pruner:6} {results[-1]}", flush=True)
    medians = {
        pruner: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for pruner, results in runs.items()
    }
    print(f"\n{args.trials}-trial search on {args.dataset}, {args.workers} workers, "
          f"median of {args.repeat}:")  # fmt: skip
    print(f"{'pruner':8} {'trials':>6} {'pruned':>6} {'iterations':>10} {'seconds':>8} "
          f"{'best val acc':>12}")  # fmt: skip
    for pruner, m in medians.items():
        print(f"{pruner:8} {m['trials']:6.0f} {m['pruned']:6.0f} {m['iterations']:10.0f} "
              f"{m['seconds']:8.1f} {m['best_val_accuracy']:12.4f}")  # fmt: skip
    pruned, unpruned = medians["median"], medians["none"]
    ratio = pruned["iterations"] / unpruned["iterations"]
    gap = unpruned["best_val_accuracy"] - pruned["best_val_accuracy"]
    print(f"iterations with pruning / without: {ratio:.2f} (target <= {ITERATIONS_TARGET}: "
          f"{'met' if ratio <= ITERATIONS_TARGET else 'MISSED'})")  # fmt: skip
    print(f"wall time with pruning / without: {pruned['seconds'] / unpruned['seconds']:.2f}")
    print(f"best validation accuracy, without minus with pruning: {gap:+.4f} (target <= "
          f"{ACCURACY_TARGET}: {'met' if gap <= ACCURACY_TARGET else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
