"""A Hydra sweep as one MLflow parent run with one child run per job.

The callback runs in the launching process. Before any worker starts it checks every
job's config, creates the store (a new SQLite store created by several workers at
once fails), the experiment and the parent run, and hands the parent to the workers
through the environment. When the sweep ends it records the outcome on the parent.
"""

import atexit
import copy
import functools
import json
import os
import time
from dataclasses import asdict, dataclass

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import results, tracking
from pipeline.cli import fail
from pipeline.config import ConfigError, error_line, validate
from pipeline.job import Outcome, run_name

PARENT_ENV = "BACKPROP_LAB_PARENT_RUN"
UI_ADDRESS = "http://127.0.0.1:{port}"


@dataclass
class Parent:
    run_id: str
    experiment_id: str
    tracking_uri: str
    n_jobs: int | None


def parent_from_env() -> Parent | None:
    value = os.environ.get(PARENT_ENV)
    return Parent(**json.loads(value)) if value else None


def sweep_overrides(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides, as the basic (grid) sweeper will expand them; None otherwise."""
    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.params or {}).items()]
    params += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(params)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_jobs(config_name: str, jobs: list[list[str]]) -> None:
    """Validate every job's config; exit 2 with one line on the first bad one."""
    for overrides in jobs:
        try:
            validate(job_config(config_name, overrides))
        except (ConfigError, HydraException, OmegaConfBaseException) as error:
            fail(error_line(error))


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

    def on_multirun_start(self, config: DictConfig, config_name: str, **kwargs) -> None:
        jobs = sweep_overrides(config)
        if jobs is not None:
            check_jobs(config_name, jobs)
        uri = tracking.tracking_uri(config.tracking.uri)
        client = tracking.connect(uri)
        experiment = tracking.experiment_id(client, config.tracking.experiment)
        name = f"{config.sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        overrides = " ".join(config.hydra.overrides.task) or "(none)"
        run_id = tracking.start_run(client, experiment, name, {tracking.SWEEP_TAG: overrides})
        sweep_params = {f"sweep.{k}": v for k, v in (config.hydra.sweeper.params or {}).items()}
        tracking.log_params(client, run_id, sweep_params | {"sweep.overrides": overrides})
        n_jobs = len(jobs) if jobs else config.hydra.sweeper.get("n_trials")
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
        results.record_sweep(client, parent.run_id, table)
        tracking.log_results(client, parent.run_id, final=results.sweep_metrics(table))
        client.set_terminated(parent.run_id, status)
        seconds = time.perf_counter() - self.started
        print(results.summary(table, seconds), flush=True)
        print(f"runs table (after `make ui`): {runs_url(parent.experiment_id)}", flush=True)


def runs_url(experiment_id: str) -> str:
    port = os.environ.get("PORT", "5000")
    return tracking.runs_table_url(UI_ADDRESS.format(port=port), experiment_id)


def report_progress(
    cfg: DictConfig, outcome: Outcome, parent: Parent | None, job_num: int | None
) -> None:
    """One line per finished job (sweeps) or a pointer to the run (single jobs)."""
    r = outcome.result
    accuracy = "diverged" if r.diverged_at is not None else f"test accuracy {r.test_accuracy:.3f}"
    if parent:
        of = f"/{parent.n_jobs}" if parent.n_jobs else ""
        line = f"{run_name(cfg):16} {outcome.status:8} {accuracy}  {r.seconds:.1f}s"
        print(f"[job {job_num + 1}{of}] {line}", flush=True)
    else:
        print(f"{outcome.status} run {outcome.run_id}: {accuracy}, {r.seconds:.1f}s", flush=True)
        print(f"runs table (after `make ui`): {runs_url(outcome.experiment_id)}", flush=True)
