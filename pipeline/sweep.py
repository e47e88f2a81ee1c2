"""A Hydra sweep as one MLflow parent run with one child run per job.

Before Hydra launches anything, the entry point checks every job's config (``check_jobs``
on the jobs of ``planned_jobs``). The callback then runs in the launching process: it
creates the store (a new SQLite store created by several workers at once fails), the
experiment and the parent run, and hands the parent to the workers through the
environment. When the sweep ends it records the outcome on the parent.
"""

import atexit
import copy
import functools
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass
from functools import partial

import pandas as pd
from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, OverrideType
from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from pipeline import plots, results, tracking
from pipeline.config import validate
from pipeline.job import Outcome, run_name

PARENT_ENV = "BACKPROP_LAB_PARENT_RUN"


@dataclass
class Parent:
    run_id: str
    experiment_id: str
    tracking_uri: str
    n_jobs: int | None


def parent_from_env() -> Parent | None:
    value = os.environ.get(PARENT_ENV)
    return Parent(**json.loads(value)) if value else None


def planned_jobs(sweeper: DictConfig, overrides: list[str]) -> list[list[str]]:
    """Each job's overrides: the grid of the basic sweeper, as it will expand it; for a search
    (any other sweeper), the corners of its space: every value of its discrete dimensions
    crossed with both ends of its intervals.

    ``overrides`` are the command line's task overrides (not ``hydra.*``), which replace
    the sweeper's params of the same key.
    """
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    if is_grid(sweeper):
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    dimensions = {o.get_key_element(): _extremes(o) for o in parsed}  # later keys win
    return [list(job) for job in itertools.product(*dimensions.values())]


def is_grid(sweeper: DictConfig) -> bool:
    return "BasicSweeper" in str(sweeper.get("_target_", ""))


def swept_values(jobs: list[list[str]]) -> str:
    """What a grid varies, e.g. ``model.depth in {1, 2} x model.width in {4, 8}``."""
    values: dict[str, list[str]] = {}
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            if value not in values.setdefault(key, []):
                values[key].append(value)
    varied = [f"{key} in {{{', '.join(v)}}}" for key, v in values.items() if len(v) > 1]
    return " x ".join(varied)


def _extremes(override) -> list[str]:
    """``key=value`` for each value of a discrete dimension, or both ends of an interval."""
    key, value = override.get_key_element(), override.value()
    if isinstance(value, IntervalSweep):
        ends = [value.start, value.end]
        return [f"{key}={int(v) if 'int' in value.tags else v}" for v in ends]
    if override.is_sweep_override():  # choice or range
        return [f"{key}={v}" for v in override.sweep_string_iterator()]
    return [override.input_line]


def check_jobs(config_name: str, jobs: list[list[str]]) -> None:
    """Validate every job's config; raises ConfigError (or Hydra's error) on the first bad one.

    Needs Hydra's compose API to be initialised on conf/.
    """
    for overrides in jobs:
        validate(job_config(config_name, overrides))


def job_config(config_name: str, overrides: list[str]) -> DictConfig:
    """The job's composed config. Hydra composes once per choice of config groups (~0.1 s);
    the values (``model.depth=2``) are then set on a copy."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [o for o in parsed if "." in o.key_or_group and o.type == OverrideType.CHANGE]
    groups = tuple(o.input_line for o in parsed if o not in values)
    cfg = copy.deepcopy(_compose_groups(config_name, groups))
    for override in values:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


@functools.lru_cache(maxsize=64)
def _compose_groups(config_name: str, groups: tuple[str, ...]) -> DictConfig:
    return compose(config_name, overrides=list(groups))


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent: Parent | None = None
        self.started = 0.0
        self.swept = ""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        uri = tracking.tracking_uri(config.tracking.uri)
        client = tracking.connect(uri)
        experiment = tracking.experiment_id(client, config.tracking.experiment)
        name = f"{config.sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        overrides = " ".join(config.hydra.overrides.task) or "(none)"
        run_id = tracking.start_run(client, experiment, name, {tracking.SWEEP_TAG: overrides})
        params = dict(config.hydra.sweeper.params or {})
        sweep_params = {f"sweep.{k}": v for k, v in params.items()}
        tracking.log_params(client, run_id, sweep_params | {"sweep.overrides": overrides})
        jobs = planned_jobs(config.hydra.sweeper, list(config.hydra.overrides.task))
        if is_grid(config.hydra.sweeper):
            n_jobs, self.swept = len(jobs), swept_values(jobs)
        else:  # a search: its space
            n_jobs = config.hydra.sweeper.get("n_trials")
            self.swept = " x ".join(f"{k} in {v}" for k, v in params.items())
        self.parent = Parent(run_id, experiment, uri, n_jobs)
        os.environ[PARENT_ENV] = json.dumps(asdict(self.parent))
        self.started = time.perf_counter()
        atexit.register(self.finish, "KILLED")  # Ctrl-C or a crash: nothing left RUNNING
        count = f"{n_jobs} jobs" if n_jobs else "jobs"
        print(f"sweep {name}: {count}, parent run {run_id}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.finish("FINISHED")

    def finish(self, status: str) -> None:
        """Record the sweep's outcome on the parent run and end it (once)."""
        parent, self.parent = self.parent, None
        if parent is None:
            return
        os.environ.pop(PARENT_ENV, None)
        client = tracking.connect(parent.tracking_uri)
        if not tracking.is_running(client, parent.run_id):
            return
        tracking.end_running_children(client, parent.run_id, "KILLED")
        table = results.sweep_table(client, parent.run_id)
        record_sweep(client, parent.run_id, table, self.swept)
        tracking.log_results(client, parent.run_id, final=results.sweep_metrics(table))
        client.set_terminated(parent.run_id, status)
        seconds = time.perf_counter() - self.started
        print(results.summary(table, seconds), flush=True)
        print(f"runs table (after `make ui`): {tracking.runs_table_url(parent.experiment_id)}")


def record_sweep(client: MlflowClient, parent_run_id: str, table: pd.DataFrame, swept: str):
    """The comparison table, the best child, all cost curves and a description, on the parent."""
    finished = table[table.status == "FINISHED"]
    tags = {tracking.NOTE: description(table, swept, parent_run_id)}
    if len(finished):
        tags |= {"best_run_id": finished.run_id.iloc[0], "best_run": finished.run.iloc[0]}
    tracking.log_results(client, parent_run_id, tags=tags)
    curves = results.train_cost_curves(client, table.run_id)
    by_name = {row.run: curves[row.run_id] for row in table.itertuples()}
    figure = plots.overlaid_curves(by_name, "train cost of every job")
    tracking.log_files(
        client,
        parent_run_id,
        {
            "comparison.csv": lambda path: path.write_text(table.to_csv(index=False)),
            "cost_curves.png": partial(plots.save_png, figure),
        },
    )


def description(table: pd.DataFrame, swept: str, parent_run_id: str) -> str:
    """The few lines the parent run's page shows: what was swept, how it went, what is best."""
    counts = results.status_counts(table)
    lines = [
        f"Swept {swept or 'the command line overrides'}: {len(table)} jobs, "
        + ", ".join(f"{n} {status.lower()}" for status, n in counts.items()) + ".",
    ]  # fmt: skip
    finished = table[table.status == "FINISHED"]
    if len(finished):
        best = finished.iloc[0]
        lines.append(f"Best run: **{best.run}** ({results.best_run_measures(best)}).")
    lines.append(f'Report: `make report ARGS="--sweep {parent_run_id}"` (tables and plots).')
    return "\n\n".join(lines)


def report_progress(cfg: DictConfig, outcome: Outcome, parent: Parent, job_num: int) -> None:
    """One line per finished job of a sweep."""
    r = outcome.result
    accuracy = "diverged" if r.diverged_at is not None else f"test accuracy {r.test_accuracy:.3f}"
    of = f"/{parent.n_jobs}" if parent.n_jobs else ""
    line = f"{run_name(cfg):16} {outcome.status:8} {accuracy}  {r.seconds:.1f}s"
    print(f"[job {job_num + 1}{of}] {line}", flush=True)
