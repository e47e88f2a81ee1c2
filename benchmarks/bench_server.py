"""The tracking server under load: 8 job processes writing 100 jobs at once, on PostgreSQL and,
side by side, on SQLite.

For each backend: a real PostgreSQL (pgserver, in a temp folder, Unix socket only) or a
SQLite file behind a real ``python -m pipeline.server``; a pool of 8 processes runs 100
quick jobs (``train=quick``: 101 points a curve, two curves) through ``run_job`` with
``tracking.uri`` the server. Printed: jobs per second (wall), and the slowest and median
``log_batch`` call as the job processes saw it (every call timed in its process).
"""

import argparse
import itertools
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from pipeline.job import config
from pipeline.job.run import run_job

ROOT = Path(__file__).resolve().parents[1]
DEPTHS, WIDTHS = (1, 2), (2, 4, 8, 16, 32)
RATES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LOG_BATCH_SECONDS: list[float] = []  # this worker's log_batch calls, for the current job


def timed(method):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            LOG_BATCH_SECONDS.append(time.perf_counter() - start)

    return wrapper


def start_worker() -> None:
    config.register()
    initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3")
    MlflowClient.log_batch = timed(MlflowClient.log_batch)


def one_job(overrides: list[str]) -> tuple[str, list[float]]:
    LOG_BATCH_SECONDS.clear()
    outcome = run_job(compose("config", overrides=overrides))
    return outcome.status, list(LOG_BATCH_SECONDS)


def serve(backend: str, port: int, folder: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline.server", "--port", str(port)]
    command += ["--backend-store-uri", backend, "--artifacts-destination", str(folder / "art")]
    server = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert server.stdout.readline().startswith("MLflow tracking server on"), "no server"
    return server


def load(base: str, processes: int, jobs: int) -> dict[str, float]:
    grid = list(itertools.product(DEPTHS, WIDTHS, RATES))[:jobs]
    tasks = [
        [
            f"tracking.uri={base}",
            "train=quick",
            f"model.depth={d}",
            f"model.width={w}",
            f"train.learning_rate={r}",
        ]
        for d, w, r in grid
    ]
    with multiprocessing.get_context("spawn").Pool(processes, initializer=start_worker) as pool:
        pool.map(one_job, tasks[:processes])  # warm: imports and a first job in every worker
        start = time.perf_counter()
        done = pool.map(one_job, tasks, chunksize=1)
        seconds = time.perf_counter() - start
    calls = [t for _, times in done for t in times]
    statuses = {status for status, _ in done}
    assert statuses == {"FINISHED"}, statuses
    return {
        "jobs_per_second": len(tasks) / seconds,
        "seconds": seconds,
        "slowest_log_batch": max(calls),
        "median_log_batch": statistics.median(calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument("--backends", default="postgresql,sqlite", help="%(default)s")
    args = parser.parse_args()
    import pgserver  # the dev extra

    with tempfile.TemporaryDirectory(prefix="pg-", dir="/tmp") as folder:
        postgres = pgserver.get_server(folder, cleanup_mode="stop")
        postgres.psql("CREATE DATABASE bench;")
        backends = {
            "postgresql": f"postgresql://postgres:@/bench?host={folder}",
            "sqlite": f"sqlite:///{folder}/sqlite/mlflow.db",
        }
        print(f"{args.jobs} quick jobs, {args.processes} processes writing at once")
        for name in args.backends.split(","):
            backend = backends[name]
            server = serve(backend, args.port, Path(folder))
            try:
                figures = load(f"http://127.0.0.1:{args.port}", args.processes, args.jobs)
            finally:
                server.terminate()
                server.wait()
            print(
                f"  {name:10} {figures['jobs_per_second']:5.2f} jobs/s "
                f"({figures['seconds']:.1f} s); log_batch slowest "
                f"{figures['slowest_log_batch']:.3f} s, median "
                f"{figures['median_log_batch']:.3f} s"
            )
        postgres.cleanup()


if __name__ == "__main__":
    main()
