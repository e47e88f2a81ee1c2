"""What pruning saves a search, and what it costs it: the same search with the median pruner
and with none, side by side.

For each pruner, ``make search`` as a user runs it (``python -m pipeline.search``, its two
workers) in a fresh store, on a data set whose jobs take a while (digits, 2,000 iterations):
  - the training iterations spent: over its trials, the last iteration each one logged
    (a pruned trial's is where it stopped; a diverged one's, its last finite point);
  - the wall time of the whole command;
  - the best validation accuracy found (what the search maximises).
Targets: pruning spends at most 0.6 of the iterations of the search without it, and finds
a best validation accuracy within 0.01 of it.

Each repeat is another search: seed 0, 1, 2, ... (the data's split, the initialisations and
the sampler's proposals all follow it), each seed's pair run back to back, so that the
machine's load falls on both. Each seed gives its ratio and its gap; the figures are their
medians over the seeds. One seed repeated would measure one set of trials (on digits, the
search of seed 0 prunes least of seeds 0 to 4: benchmarks/README.md) and timing noise.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from pipeline.store import tracking

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS_TARGET, ACCURACY_TARGET = 0.6, 0.01


def one_search(pruner: str, seed: int, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """A search in a subprocess on a fresh store in ``folder``: its iterations, seconds,
    best accuracy."""
    uri = tracking.SQLITE + str(folder / "mlflow.db")
    command = [
        sys.executable,
        "-m",
        "pipeline.search",
        f"search.n_trials={args.trials}",
        f"search.pruner={pruner}",
        f"search.workers={args.workers}",
        f"seed={seed}",
        f"dataset={args.dataset}",
        f"tracking.uri={uri}",
        *args.search_args.split(),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"error: the search with pruner {pruner} failed: {done.stderr[-2000:]}")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args.dataset).experiment_id  # its experiment
    parent = next(r for r in client.search_runs([experiment]) if tracking.SWEEP_TAG in r.data.tags)
    children = tracking.child_runs(client, parent.info.run_id)
    spent = sum(
        max(m.step for m in client.get_metric_history(c.info.run_id, "train_cost"))
        for c in children
    )
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
    parser.add_argument("--repeat", type=int, default=5, help="seeds, from --seed on (medians)")
    parser.add_argument("--seed", type=int, default=0, help="the first repeat's seed")
    parser.add_argument("--search-args", default="", help="more overrides for both searches")
    parser.add_argument("--keep", action="store_true", help="keep the stores (and say where)")
    args = parser.parse_args()
    seeds = range(args.seed, args.seed + args.repeat)
    runs = {pruner: [] for pruner in ("median", "none")}
    ratios, gaps = [], []
    for seed in seeds:
        for pruner, results in runs.items():
            folder = Path(tempfile.mkdtemp(prefix=f"bench-search-{pruner}-{seed}-"))
            results.append(one_search(pruner, seed, args, folder))
            kept = f"  (store: {folder})" if args.keep else ""
            print(f"  seed {seed} {pruner:6} {results[-1]}{kept}", flush=True)
            if not args.keep:
                shutil.rmtree(folder)
        pruned, unpruned = runs["median"][-1], runs["none"][-1]
        ratios.append(pruned["iterations"] / unpruned["iterations"])
        gaps.append(unpruned["best_val_accuracy"] - pruned["best_val_accuracy"])
        print(f"  seed {seed}: iterations {ratios[-1]:.2f}, accuracy gap {gaps[-1]:+.4f}")
    medians = {
        pruner: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for pruner, results in runs.items()
    }
    print(
        f"\n{args.trials}-trial search on {args.dataset}, {args.workers} workers, "
        f"medians over seeds {seeds.start}..{seeds.stop - 1}:"
    )
    print(
        f"{'pruner':8} {'trials':>6} {'pruned':>6} {'iterations':>10} {'seconds':>8} "
        f"{'best val acc':>12}"
    )
    for pruner, m in medians.items():
        print(
            f"{pruner:8} {m['trials']:6.0f} {m['pruned']:6.0f} {m['iterations']:10.0f} "
            f"{m['seconds']:8.1f} {m['best_val_accuracy']:12.4f}"
        )
    ratio, gap = statistics.median(ratios), statistics.median(gaps)
    seconds = statistics.median(
        p["seconds"] / n["seconds"] for p, n in zip(runs["median"], runs["none"], strict=True)
    )
    print(
        f"iterations with pruning / without: {ratio:.2f} (seeds: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; target <= {ITERATIONS_TARGET}: "
        f"{'met' if ratio <= ITERATIONS_TARGET else 'MISSED'})"
    )
    print(f"wall time with pruning / without: {seconds:.2f}")
    print(
        f"best validation accuracy, without minus with pruning: {gap:+.4f} (seeds: "
        f"{', '.join(f'{g:+.4f}' for g in gaps)}; target <= {ACCURACY_TARGET}: "
        f"{'met' if gap <= ACCURACY_TARGET else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
