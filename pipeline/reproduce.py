"""``python -m pipeline.reproduce RUN_ID | CONFIG.yaml``: run a recorded config again, and compare.

The config comes from the run's ``config.yaml`` artifact (or a file), never from today's
conf/: it is only typed by the schema, not re-composed. The new run goes to the same
experiment, tagged ``reproduced_from``. Then every point of the cost curves
(``train_cost``, ``val_cost``, ``test_cost``) and the final metrics are compared. Exit 0
when they match (bit for bit, or within ``--rtol``), 1 when they differ, 2 on bad input
(and no run is created).
"""

import argparse
import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import process, tracking
from pipeline.config import ADDED_LATER, Config, ConfigError, validate
from pipeline.errors import InputError, fail, first_line
from pipeline.job import run_job, run_name
from pipeline.tracking import flatten

# test_cost: one final point, or a whole curve in runs without a validation part
CURVES = ("train_cost", "val_cost", "test_cost")
FINAL = ("train_accuracy", "val_accuracy", "test_accuracy", "best_iteration", "stopped_at")


def parse_config(text: str, source: str) -> DictConfig:
    """The recorded config, typed by the schema and checked; InputError if it is not one.

    A recorded config has every key of the schema of its day: a key added since
    (ADDED_LATER) may be missing and takes the value that means the behaviour from before
    it; any other missing key is refused. The error never quotes the file: it may be
    anything (a path given by mistake), and its lines would end up in logs.
    """
    try:
        recorded = OmegaConf.create(text)  # OmegaConf's YAML: 1e-5 is a float
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{source} is not a config: not valid YAML{where}") from None
    keys = (
        set(flatten(OmegaConf.to_container(recorded)))
        if isinstance(recorded, DictConfig)
        else set()
    )
    schema = set(flatten(OmegaConf.to_container(OmegaConf.structured(Config))))
    if not keys & schema:
        raise InputError(f"{source} is not a config: it has none of the config's keys")
    missing = sorted(schema - keys - ADDED_LATER.keys())
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"{source} is not a complete recorded config: it lacks {', '.join(missing[:3])}{more}"
        )
    base = OmegaConf.structured(Config)
    for key, value in ADDED_LATER.items():
        OmegaConf.update(base, key, value, merge=False)
    try:
        cfg = OmegaConf.merge(base, recorded)
    except (OmegaConfBaseException, ValueError) as error:  # an unknown key, a wrong type
        key = getattr(error, "full_key", None)
        where = f" at {key}" if key else ""
        raise InputError(
            f"{source} is not a valid config{where}: {first_line(error, type(error).__name__)}"
        ) from None
    try:
        validate(cfg)
    except ConfigError as error:
        raise InputError(f"{source}: {error}") from None
    return cfg


def recorded_config(client: MlflowClient, run_id: str) -> tuple[DictConfig, str]:
    """The config.yaml of ``run_id`` and the run's experiment id."""
    run = tracking.get_run(client, run_id)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = download_artifacts(
                run_id=run_id,
                artifact_path="config.yaml",
                dst_path=folder,
                tracking_uri=client.tracking_uri,
            )
            text = Path(path).read_text()
        except (MlflowException, OSError):
            raise InputError(f"run {run_id} has no config.yaml artifact to reproduce") from None
    return parse_config(text, f"config.yaml of run {run_id}"), run.info.experiment_id


def config_file(path: str) -> DictConfig:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            f"cannot read config file {path}: {first_line(error, type(error).__name__)}"
        ) from None
    return parse_config(text, path)


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


def compare(client: MlflowClient, original: str, reproduced: str, rtol: float) -> tuple[bool, str]:
    """(match, verdict): identical, within rtol, or where the largest deviation is."""
    a, b = metric_points(client, original), metric_points(client, reproduced)
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())[:3]
        return False, f"differs: not the same points were recorded (e.g. {only})"
    deviations = [Deviation(k, s, a[k, s], b[k, s]) for k, s in a if not same(a[k, s], b[k, s])]
    n = len(a)
    if not deviations:
        return True, f"identical: all {n} values (cost curves and final metrics) match bit for bit"
    worst = max(deviations, key=lambda d: (d.relative, d.absolute))
    where = "the final value" if worst.step < 0 else f"step {worst.step}"
    detail = (
        f"largest deviation {worst.absolute:.3g} (relative {worst.relative:.3g}) in "
        f"{worst.key} at {where}: {worst.original!r} vs {worst.reproduced!r}; "
        f"{len(deviations)} of {n} values differ"
    )
    if all(d.absolute <= rtol * abs(d.original) for d in deviations):
        return True, f"match within rtol={rtol:g}: {detail}"
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
    print(f"reproducing {run_name(cfg)} on {cfg.dataset.name} from {args.target}", flush=True)
    outcome = run_job(cfg, tags=tags, experiment_id=experiment)
    print(f"new run {outcome.run_id} ({outcome.status})", flush=True)
    if not original:
        return 0
    matches, verdict = compare(client, original, outcome.run_id, args.rtol)
    print(verdict, flush=True)
    return 0 if matches else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a run id, or the path of a config.yaml")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")
    parser.add_argument("--against", help="with a config file: the run id to compare with")
    tracking.add_tracking_uri_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        sys.exit(reproduce(args))
    except InputError as error:
        fail(error)


if __name__ == "__main__":
    process.tune_for_jobs()  # it trains
    main()
