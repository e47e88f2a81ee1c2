"""A job's overhead outside the training math, and the parallel sweep's speed-up.

Printed, each measured side by side in this one run:
  - per-job overhead in a warm worker (imports done): the median time a job spends
    outside the training loop, broken down by component and, from a real serial sweep,
    as a whole (Hydra's per-job work included), against the job's training time
    (target <= 0.15 s);
  - live curves: the whole default job with the default flushing (tracking.flush_seconds),
    without any and with a batch at every logged point, and one batch's cost alone;
  - the default 27-job ``make sweep`` against the naive peer (benchmarks/naive_sweep.py)
    and against the ideal (its jobs' training time over the cores);
  - the same sweep with the joblib launcher (one worker per core) against the same sweep
    with one worker (target speed-up >= 1.7 on 2 cores), alternated rounds, with the job
    phase and the fixed costs apart, the ceiling those fixed costs leave, and the
    one-worker sweep's per-job overhead (Hydra included).
"""

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import OmegaConf

from pipeline.job import config
from pipeline.job import data as datasets
from pipeline.job.loop import Point, layer_dims, train
from pipeline.job.run import run_job
from pipeline.processes import settings
from pipeline.store import plots, tracking

ROOT = Path(__file__).resolve().parents[1]
config.register()


def median_seconds(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead_components(cfg, repeat: int) -> dict[str, float]:
    """Median seconds of each piece of a job's work outside training, on a warm process."""
    data = datasets.load(cfg.dataset, seed=cfg.seed, dtype=cfg.train.dtype)
    dims = layer_dims(data.n_x, cfg.model.depth, cfg.model.width, data.n_y)
    result = train(data, dims, iterations=cfg.train.iterations, log_every=cfg.train.log_every)
    client = tracking.connect(tracking.tracking_uri(cfg.tracking.uri))
    experiment = tracking.experiment_id(client, cfg.tracking.experiment)
    params = tracking.flatten(OmegaConf.to_container(cfg, resolve=True))
    curves = result.curves

    def mlflow_run():
        run_id = tracking.start_run(client, experiment, "bench", {"bench": "1"})
        tracking.log_params(client, run_id, params)
        tracking.log_dataset(client, run_id, "moons", data.X_train, data.Y_train)
        tracking.log_results(client, run_id, result.steps, curves, {"test_accuracy": 1.0})
        client.set_terminated(run_id)

    folder = Path(tempfile.mkdtemp())
    labels = data.Y_train[0]
    run_id = tracking.start_run(client, experiment, "bench-artifacts", {})
    files = {
        "config.yaml": lambda path: path.write_text(OmegaConf.to_yaml(cfg)),
        "parameters.npz": lambda path: np.savez(path, **result.parameters),
    }
    return {
        "data": median_seconds(lambda: datasets.load(cfg.dataset, seed=0), repeat),
        "mlflow run (batched)": median_seconds(mlflow_run, repeat),
        "cost-curve plot": median_seconds(
            lambda: plots.save_png(
                plots.cost_curves(result.steps, result.curves, "t"),
                folder / "c.png",
            ),
            repeat,
        ),
        "decision boundary": median_seconds(
            lambda: plots.save_png(
                plots.decision_boundary(data.X_train, labels, result.parameters, "relu", "t"),
                folder / "d.png",
            ),
            repeat,
        ),
        "artifacts upload": median_seconds(
            partial(tracking.log_files, client, run_id, files), repeat
        ),
    }


def flush_seconds_per_batch(cfg, points: int, repeat: int) -> float:
    """Median seconds of one live-curves batch of ``points`` logged points (2 costs each)."""
    client = tracking.connect(tracking.tracking_uri(cfg.tracking.uri))
    experiment = tracking.experiment_id(client, cfg.tracking.experiment)
    live = tracking.LiveCurves(client, tracking.start_run(client, experiment, "flush", {}), 1e9)
    costs = {"train_cost": 0.5, "val_cost": 0.6}
    step = iter(range(10**9))

    def batch():
        for _ in range(points):
            live(Point(next(step), costs, {}, False))
        live.flush()

    return median_seconds(batch, repeat)


def in_process_jobs(cfg, repeat: int) -> tuple[float, float]:
    """Median (whole job - training) and median training seconds, run_job in a warm process."""
    run_job(cfg)  # warm: first-use costs of MLflow and matplotlib
    overheads, trainings = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = run_job(cfg)
        overheads.append(time.perf_counter() - start - outcome.result.seconds)
        trainings.append(outcome.result.seconds)
    return statistics.median(overheads), statistics.median(trainings)


def interleaved_jobs(variants: dict, repeat: int) -> dict[str, float]:
    """Median wall seconds of each variant's whole job (run_job, warm), interleaved round by
    round so that the machine's load hits each alike."""
    for variant in variants.values():
        run_job(variant)  # warm: first-use costs of MLflow and matplotlib
    wall = {name: [] for name in variants}
    for _ in range(repeat):
        for name, variant in variants.items():
            start = time.perf_counter()
            run_job(variant)
            wall[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in wall.items()}


def live_curves(cfg, repeat: int) -> None:
    """A whole job's seconds (training included: the loop sends the batches) with the
    default live flushing (a batch at most every tracking.flush_seconds), without any, and
    with a batch at every point, interleaved round by round so that the machine's load
    hits each alike; and one batch's cost alone."""
    n_points = cfg.train.iterations // cfg.train.log_every + 1
    print(f"live curves, default job ({n_points} points), warm, interleaved, medians of {repeat}:")
    variants = {
        f"default (flush_seconds={cfg.tracking.flush_seconds:g})": cfg,
        "no live flushing (inf)": OmegaConf.merge(cfg, {"tracking": {"flush_seconds": math.inf}}),
        "a batch every point": OmegaConf.merge(cfg, {"tracking": {"flush_seconds": 1e-9}}),
    }
    medians = interleaved_jobs(variants, repeat)
    for name, seconds in medians.items():
        print(f"  whole job, {name:27} {seconds:6.3f} s")
    default, none, every = medians.values()
    print(
        f"  default - none: {default - none:+.3f} s a job (no call before the final batch "
        f"when training is shorter than flush_seconds)"
    )
    print(
        f"  (every point - none) / {n_points} points: {(every - none) / n_points * 1000:.2f} ms "
        f"a batch inside a job"
    )
    for points in (1, 100):
        seconds = flush_seconds_per_batch(cfg, points, repeat * 5)
        print(
            f"  one batch of {points:3} points ({2 * points:3} metrics), alone: "
            f"{seconds * 1000:6.2f} ms"
        )


def run_sweep(store: Path, n_jobs: int, extra: list[str]) -> float:
    """Wall seconds of ``make sweep``'s command with ``n_jobs`` workers, into ``store``."""
    command = [sys.executable, "-m", "pipeline.train", "-m", "sweep=default"]
    command += [f"tracking.uri=sqlite:///{store}/mlflow.db", f"hydra.launcher.n_jobs={n_jobs}"]
    command += [f"hydra.sweep.dir={store}/multirun", *extra]
    start, started_at = time.perf_counter(), time.time()
    subprocess.run(command, cwd=store, check=True, capture_output=True)
    (store / "ran.txt").write_text(f"{started_at} {time.time()}")  # for fixed_costs
    return time.perf_counter() - start


def fixed_costs(store: Path) -> dict[str, float]:
    """The sweep's seconds outside its job phase, by component, from the store's timestamps
    and the process's start and exit (written by run_sweep)."""
    started_at, ended_at = (float(t) for t in (store / "ran.txt").read_text().split())
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    (parent,) = [r for r in runs if "job_number" not in r.data.tags]
    jobs = [r for r in runs if "job_number" in r.data.tags]
    first_start = min(r.info.start_time for r in jobs) / 1000
    last_end = max(r.info.end_time for r in jobs) / 1000
    return {
        "start to parent run (imports, composing, every job checked, store)": (
            parent.info.start_time / 1000 - started_at
        ),
        "parent run to first job's run (Hydra's launch, workers' start)": (
            first_start - parent.info.start_time / 1000
        ),
        "last job's end to parent's end (summary, comparison plot)": (
            parent.info.end_time / 1000 - last_end
        ),
        "parent's end to exit (workers' and interpreter's exit)": (
            ended_at - parent.info.end_time / 1000
        ),
    }


def interrupted_then_resumed(store: Path, n_jobs: int, extra: list[str]) -> tuple[float, float]:
    """(wall seconds of ``make sweep RESUME=latest``, fraction of jobs it had left to run)
    after the launcher of the same sweep was killed with -9 once about half its jobs ended."""
    uri = f"sqlite:///{store}/mlflow.db"
    command = [sys.executable, "-m", "pipeline.train", "-m", "sweep=default", f"tracking.uri={uri}"]
    command += [f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={store}/multirun", *extra]
    out = store / "out.txt"
    with open(out, "w") as stdout:
        launcher = subprocess.Popen(command, cwd=store, stdout=stdout, stderr=subprocess.DEVNULL)
        while out.read_text().count("[job ") < 13:
            time.sleep(0.05)
        launcher.kill()
        launcher.wait()
    time.sleep(3)  # its workers end their runs and leave
    command = [sys.executable, "-m", "pipeline.train", "-m", "--resume", "latest"]
    command += [f"tracking.uri={uri}", f"hydra.launcher.n_jobs={n_jobs}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=store, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    finished, left = (
        int(n) for n in re.search(r"(\d+) finished, (\d+) to run", done.stdout).groups()
    )
    return wall, left / (finished + left)


def versus_peer(store: Path, rounds: int, extra: list[str]) -> None:
    """``make sweep`` against the naive peer (benchmarks/naive_sweep.py), interleaved rounds,
    with one worker per core each; medians."""
    cores = os.cpu_count()
    ours, peers, ideals = [], [], []
    for i in range(rounds):
        (store / f"ours{i}").mkdir()
        (store / f"peer{i}").mkdir()
        ours.append(run_sweep(store / f"ours{i}", -1, extra))
        start = time.perf_counter()
        peer = [
            sys.executable,
            str(ROOT / "benchmarks" / "naive_sweep.py"),
            str(store / f"peer{i}"),
        ]
        subprocess.run(peer, check=True, capture_output=True)
        peers.append(time.perf_counter() - start)
        seconds = [r.data.metrics["train_seconds"] for r in job_runs(store / f"ours{i}")]
        ideals.append(sum(seconds) / cores)
    wall, peer, ideal = (statistics.median(x) for x in (ours, peers, ideals))
    ratio = statistics.median(o / p for o, p in zip(ours, peers, strict=True))
    print(
        f"default sweep vs the naive peer (MLPClassifier + joblib + MLflow), medians of {rounds}:"
    )
    print(
        f"  make sweep {wall:6.1f} s   naive peer {peer:6.1f} s   ratio {ratio:.2f} (target <= 0.8)"
    )
    print(
        f"  ideal (sum of train_seconds / {cores} cores) {ideal:6.1f} s   make sweep / ideal "
        f"{statistics.median(o / i for o, i in zip(ours, ideals, strict=True)):.2f} (target <= 2.0)"
    )


def job_runs(store: Path) -> list:
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiments) if "job_number" in r.data.tags]


def job_phase(store: Path) -> float:
    """Seconds from the first job's start to the last job's end: the sweep without the
    launcher's start-up, the workers' imports and the summary."""
    runs = job_runs(store)
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000


def serial_job_overheads(store: Path) -> list[float]:
    """From a one-worker sweep: the gaps between jobs' ends, less their training time.

    Each gap holds one whole job on a warm worker (Hydra's per-job work, data, MLflow,
    plots, weights); the first job, which pays the worker's imports, is left out.
    """
    children = sorted(job_runs(store), key=lambda r: r.info.end_time)
    ends = [r.info.end_time / 1000 for r in children]
    return [
        (end - previous) - run.data.metrics["train_seconds"]
        for previous, end, run in zip(ends, ends[1:], children[1:], strict=False)
    ]


def parallel_versus_one_worker(store: Path, rounds: int, extra: list[str]) -> float:
    """The default sweep with one worker per core and with one worker, alternated for
    ``rounds`` rounds: walls, job phases, fixed costs by component and the one-worker
    sweep's per-job overhead, medians over the rounds; returns the parallel wall."""
    cores = os.cpu_count()
    print(
        f"default 27-job sweep {' '.join(extra)}: joblib with {cores} workers vs 1 worker, "
        f"medians of {rounds} alternated rounds"
    )
    walls = {"parallel": [], "serial": []}
    phases = {"parallel": [], "serial": []}
    fixed, per_job = [], []  # the parallel sweep's fixed costs; the serial's per-job medians
    for i in range(rounds):
        for name, n_jobs in (("parallel", -1), ("serial", 1)):
            (store / f"{name}{i}").mkdir()
            walls[name].append(run_sweep(store / f"{name}{i}", n_jobs, extra))
            phases[name].append(job_phase(store / f"{name}{i}"))
        fixed.append(fixed_costs(store / f"parallel{i}"))
        per_job.append(statistics.median(serial_job_overheads(store / f"serial{i}")))
    parallel, serial = (statistics.median(walls[n]) for n in ("parallel", "serial"))
    jobs_parallel, jobs_serial = (statistics.median(phases[n]) for n in ("parallel", "serial"))
    print(
        f"  wall:      parallel {parallel:6.1f} s   one worker {serial:6.1f} s   "
        f"speed-up {serial / parallel:.2f}x (target >= 1.7)"
    )
    print(
        f"  job phase: parallel {jobs_parallel:6.1f} s   one worker {jobs_serial:6.1f} s   "
        f"speed-up {jobs_serial / jobs_parallel:.2f}x (first job's start to last's end)"
    )
    fixed_parallel, fixed_serial = parallel - jobs_parallel, serial - jobs_serial
    print(
        f"  fixed:     parallel {fixed_parallel:6.1f} s   one worker {fixed_serial:6.1f} s   "
        f"(wall - job phase: start, imports, store, Hydra's checks, summary, exit)"
    )
    for name in fixed[0]:
        print(f"             {name:70} {statistics.median(f[name] for f in fixed):5.1f} s")
    ceiling = serial / (fixed_serial + jobs_serial / cores)
    print(
        f"  ceiling:   {ceiling:.2f}x, if the parallel sweep had one worker's fixed costs "
        f"and split the job phase perfectly over {cores} workers"
    )
    print(
        f"  per-job overhead in the one-worker sweep (Hydra included): median "
        f"{statistics.median(per_job):.3f} s (rounds: {', '.join(f'{x:.3f}' for x in per_job)}; "
        f"each the median of a sweep's 26 jobs after its first; target <= 0.15 s)"
    )
    return parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated rounds of each sweep comparison"
    )
    parser.add_argument(
        "--sweep-args", default="", help="extra overrides for both sweeps (default: none)"
    )
    args = parser.parse_args()
    extra = args.sweep_args.split()
    settings.tune_for_jobs()  # as a sweep's worker runs its jobs

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        uri = f"sqlite:///{store}/inprocess/mlflow.db"
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"tracking.uri={uri}"])
        print(
            f"per-job overhead, warm process, default job (moons, d2-w16, {cfg.train.iterations}"
            f" iterations), medians of {args.repeat}:"
        )
        for name, seconds in overhead_components(cfg, args.repeat).items():
            print(f"  {name:22} {seconds:6.3f} s")
        overhead, training = in_process_jobs(cfg, args.repeat)
        print(
            f"  {'whole job - training':22} {overhead:6.3f} s   (training {training:.3f} s,"
            f" overhead/training {overhead / training:.2f})"
        )
        live_curves(cfg, args.repeat)

        versus_peer(store, args.rounds, extra)
        parallel = parallel_versus_one_worker(store, args.rounds, extra)
        resume_store = store / "resumed"
        resume_store.mkdir()
        resumed, left = interrupted_then_resumed(resume_store, -1, extra)
        print(
            f"  resume:    {resumed:6.1f} s after kill -9 of the launcher with {left:.0%} of the "
            f"jobs left to run: {resumed / parallel:.2f} of the full sweep's wall"
        )


if __name__ == "__main__":
    main()
