"""What the learning dynamics (tracking.dynamics) cost a default job.

The whole default job (run_job in a warm process, into a SQLite store in a temporary
folder) with the dynamics on and off, interleaved round by round so that the machine's
load hits each alike; medians, and their ratio (target <= 1.05). Beside, each alone: one
point's norms, the job's dynamics metrics as one batch, dynamics.png and cost_curve.png.
"""

import argparse
import tempfile
from pathlib import Path

from bench_sweep import ROOT, interleaved_jobs, median_seconds
from hydra import compose, initialize_config_dir
from mlflow.entities import Metric
from omegaconf import OmegaConf

from pipeline.job import data as datasets
from pipeline.job.dynamics import Dynamics, layer_metrics
from pipeline.job.loop import Point, layer_dims, train
from pipeline.processes import settings
from pipeline.store import plots, tracking


def parts(cfg, repeat: int) -> dict[str, float]:
    """Median seconds, alone, of a point's norms, of the job's dynamics metrics as one batch
    into the store, of dynamics.png, and of cost_curve.png beside it."""
    data = datasets.load(cfg.dataset, seed=cfg.seed, dtype=cfg.train.dtype)
    dims = layer_dims(data.n_x, cfg.model.depth, cfg.model.width, data.n_y)
    sent: list[Metric] = []
    dynamics = Dynamics(
        0.1,
        lambda step, metrics: sent.extend(
            Metric(key, value, 0, step) for key, value in metrics.items()
        ),
    )
    points: list[Point] = []
    result = train(
        data,
        dims,
        iterations=cfg.train.iterations,
        log_every=cfg.train.log_every,
        listeners=[dynamics, points.append],
    )
    client = tracking.connect(cfg.tracking.uri)
    experiment = tracking.experiment_id(client, "parts")
    folder = Path(tempfile.mkdtemp())

    def figure(draw):
        return lambda: plots.save_png(draw(), folder / "figure.png")

    def batch():
        client.log_batch(tracking.start_run(client, experiment, "batch", {}), metrics=sent)

    return {
        "one point's norms": median_seconds(lambda: layer_metrics(points[0], 0.1), repeat * 100),
        f"{len(sent)} metrics' batch": median_seconds(batch, repeat),
        "dynamics.png": median_seconds(
            figure(lambda: plots.layer_gradients(dynamics.steps, dynamics.grad_norms, "t")), repeat
        ),
        "cost_curve.png": median_seconds(
            figure(lambda: plots.cost_curves(result.steps, result.curves, "t")), repeat
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    settings.tune_for_jobs()  # as a sweep's worker runs its jobs

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"tracking.uri={uri}"])
        n_points = cfg.train.iterations // cfg.train.log_every + 1
        layers = cfg.model.depth + 1
        print(
            f"learning dynamics, default job (moons, d{cfg.model.depth}-w{cfg.model.width}, "
            f"{n_points} points x {layers} layers x 3 metrics), warm, interleaved, medians of "
            f"{args.rounds}:"
        )
        variants = {
            name: OmegaConf.merge(cfg, {"tracking": {"dynamics": name == "on"}})
            for name in ("on", "off")
        }
        medians = interleaved_jobs(variants, args.rounds)
        for name, seconds in medians.items():
            print(f"  whole job, dynamics {name:3}  {seconds:6.3f} s")
        ratio = medians["on"] / medians["off"]
        print(f"  on / off: {ratio:.3f} (+{ratio - 1:.1%} a job; target <= 1.05)")
        for name, seconds in parts(cfg, args.rounds).items():
            print(f"  {name:20} alone: {seconds * 1000:7.3f} ms")


if __name__ == "__main__":
    main()
