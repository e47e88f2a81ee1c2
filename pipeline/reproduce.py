"""``python -m pipeline.reproduce RUN_ID | CONFIG.yaml``: run a recorded config again, and compare.

The config comes from the run's ``config.yaml`` artifact (or a file), never from today's
conf/: it is only typed by the schema, not re-composed. The new run goes to the same
experiment, tagged ``reproduced_from``. Then every point of the cost curves
(``train_cost``, ``val_cost``, ``test_cost``) and the final metrics are compared. Exit 0
when they match (bit for bit, or within ``--rtol``), 1 when they differ, 2 on bad input
(and no run is created).

A run cut short from outside its config (killed, pruned, its process dead) is reproduced up
to the point where it stopped, no further, and only what it recorded is compared; the new
run ends KILLED too, its ``killed_reason`` saying where and why it stopped.
"""

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from omegaconf import DictConfig

from pipeline.job.loop import Point, Stop
from pipeline.job.recorded import config_file, recorded_config
from pipeline.job.run import DIVERGED, run_job, run_name
from pipeline.processes import entry
from pipeline.processes.errors import InputError
from pipeline.store import tables, tracking

# test_cost: one final point, or a whole curve in runs without a validation part
CURVES = ("train_cost", "val_cost", "test_cost")


FINAL = ("train_accuracy", "val_accuracy", "test_accuracy", "best_iteration", "stopped_at")


@dataclass(frozen=True)
class CutShort:
    """Where a run stopped before its config's last iteration, and how it ended there."""

    iteration: int  # its last logged point
    status: str  # KILLED, PRUNED, FAILED (not diverged), or RUNNING (its process died)

    def __str__(self) -> str:
        return f"up to iteration {self.iteration} (the original was {self.status} there)"


def cut_short(client: MlflowClient, run_id: str, cfg: DictConfig) -> CutShort | None:
    """Where run ``run_id`` was cut short from outside its config, or None if it ended as
    its config made it end (finished, early stopped, diverged); InputError if it was cut
    short before its first point (nothing to compare)."""
    run = client.get_run(run_id)
    status, tags = run.info.status, run.data.tags
    if status == "FINISHED" or tags.get("failure_reason", "").startswith(DIVERGED):
        return None
    steps = [m.step for m in client.get_metric_history(run_id, "train_cost")]
    if not steps:
        raise InputError(f"run {run_id} is {status} and logged no point: nothing to compare")
    if max(steps) >= cfg.train.iterations:  # it stopped after training, e.g. while saving
        return None
    return CutShort(max(steps), tables.PRUNED if tracking.PRUNED_AT in tags else status)


class StopAt:
    """A training listener: end training at ``cut``'s iteration, as the original ended."""

    def __init__(self, cut: CutShort, original: str) -> None:
        self.cut = cut
        self.reason = (
            f"reproduced up to iteration {cut.iteration}, where run {original} was {cut.status}"
        )

    def __call__(self, point: Point) -> Stop | None:
        return Stop(self.reason, killed=True) if point.iteration >= self.cut.iteration else None


@dataclass
class Deviation:
    key: str
    step: int
    original: float
    reproduced: float

    @property
    def absolute(self) -> float:
        return abs(self.reproduced - self.original)

    @property
    def relative(self) -> float:
        return self.absolute / abs(self.original) if self.original else math.inf


def metric_points(client: MlflowClient, run_id: str) -> dict[tuple[str, int], float]:
    """Every compared value of the run: (curve, step) points, and final metrics at step -1."""
    points = {
        (key, m.step): m.value for key in CURVES for m in client.get_metric_history(run_id, key)
    }
    final = client.get_run(run_id).data.metrics
    return points | {(key, -1): final[key] for key in FINAL if key in final}


def compare(
    client: MlflowClient, original: str, reproduced: str, rtol: float, cut: CutShort | None = None
) -> tuple[bool, str]:
    """(match, verdict): identical, within rtol, or where the largest deviation is. Of an
    original ``cut`` short, only what it recorded is compared."""
    a, b = metric_points(client, original), metric_points(client, reproduced)
    if cut:  # the reproduction's final metrics of a run that has none are not compared
        b = {key: value for key, value in b.items() if key in a}
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())[:3]
        return False, f"differs: not the same points were recorded (e.g. {only})"
    deviations = [Deviation(k, s, a[k, s], b[k, s]) for k, s in a if not same(a[k, s], b[k, s])]
    n, scope = len(a), f" {cut}" if cut else ""
    if not deviations:
        return True, (
            f"identical{scope}: all {n} values (cost curves and final metrics) match bit for bit"
        )
    worst = max(deviations, key=lambda d: (d.relative, d.absolute))
    where = "the final value" if worst.step < 0 else f"step {worst.step}"
    detail = (
        f"largest deviation {worst.absolute:.3g} (relative {worst.relative:.3g}) in "
        f"{worst.key} at {where}: {worst.original!r} vs {worst.reproduced!r}; "
        f"{len(deviations)} of {n} values differ"
    )
    if all(d.absolute <= rtol * abs(d.original) for d in deviations):
        return True, f"match within rtol={rtol:g}{scope}: {detail}"
    return False, f"differs: {detail}"


def same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def reproduce(args: argparse.Namespace) -> int:
    client = tracking.connect(tracking.tracking_uri(args.tracking_uri))
    original = args.against
    experiment = None
    if Path(args.target).suffix in (".yaml", ".yml") or Path(args.target).is_file():
        cfg = config_file(args.target)
        tags = {"reproduced_from_config": Path(args.target).name}
        if original:
            _, experiment = recorded_config(client, original)  # it exists: compare with it
    else:
        original = args.target
        cfg, experiment = recorded_config(client, original)
        tags = {"reproduced_from": original}
    cfg.tracking.uri = client.tracking_uri  # where runs go is not part of what is reproduced
    cut = cut_short(client, original, cfg) if original else None
    where = f" {cut}" if cut else ""
    print(
        f"reproducing {run_name(cfg)} on {cfg.dataset.name} from {args.target}{where}", flush=True
    )
    stop = [StopAt(cut, original)] if cut else []
    if experiment:  # else run_job finds it, checked the same way
        tracking.check_writable(client, experiment, f"reproduce a run into experiment {experiment}")
    outcome = run_job(cfg, tags=tags, experiment_id=experiment, listeners=stop)
    print(f"new run {outcome.run_id} ({outcome.status})", flush=True)
    if not original:
        return 0
    matches, verdict = compare(client, original, outcome.run_id, args.rtol, cut)
    print(verdict, flush=True)
    return 0 if matches else 1


@entry.point()
def main(argv: list[str] | None = None) -> int:
    """The reproduction of the command line ``argv``; the exit code (0 match, 1 differs)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a run id, or the path of a config.yaml")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")
    parser.add_argument("--against", help="with a config file: the run id to compare with")
    tracking.add_tracking_uri_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return reproduce(args)


if __name__ == "__main__":
    sys.exit(entry.run(main))
