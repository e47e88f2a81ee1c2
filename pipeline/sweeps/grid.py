"""A grid sweep's jobs, planned as Hydra's basic sweeper will launch them, and checked.

Before any run is created, the launcher expands the sweep's overrides into its jobs
(``planned_jobs``), composes and validates each job's config (``plan``), and lists them
for a dry run (``dry_run_listing``). A search composes its trials with ``job_config`` too.
"""

import functools
import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.job.config import config_digest, validate
from pipeline.job.run import run_name
from pipeline.processes.errors import InputError
from pipeline.store import tables, tracking
from pipeline.sweeps import hydra_adapter

NAME_WIDTH = 16  # a run name's column in a sweep's lines


@dataclass
class Plan:
    """A sweep's jobs, checked: each job's overrides and config digest."""

    name: str  # sweep_name
    argv: list[str]  # the command line's task overrides (not hydra.*)
    params: dict[str, str]  # the sweeper's params, as in conf/sweep/
    jobs: list[list[str]]
    names: list[str]  # each job's run name
    digests: list[str]

    @property
    def n_jobs(self) -> int:
        return len(self.jobs)

    @property
    def swept(self) -> str:
        """What the sweep varies, e.g. ``model.depth in {1, 2} x model.width in {4, 8}``."""
        return swept_values(self.jobs)

    def write_jobs(self, path: Path) -> None:
        """The job list a resume reads back (``tables.recorded_jobs``), as a JSON file."""
        record = {key: getattr(self, key) for key in ("argv", "jobs", "names", "digests")}
        path.write_text(json.dumps(record, indent=1))


def plan(config_name: str, cfg: DictConfig, argv: list[str], max_jobs: int | None = None) -> Plan:
    """Every job of the sweep ``cfg`` (composed with Hydra's node) checked; raises ConfigError
    (or Hydra's error) on the first bad one, and InputError, before any job is composed, if
    there are more than ``max_jobs``. Needs Hydra's compose API initialised on conf/.
    """
    jobs = planned_jobs(cfg.hydra.sweeper, argv, max_jobs)
    checked = list(checked_jobs(config_name, cfg, jobs))
    params = dict(cfg.hydra.sweeper.get("params") or {})
    names, digests = [name for _, name, _ in checked], [digest for *_, digest in checked]
    return Plan(cfg.sweep_name, argv, params, jobs, names, digests)


def split_overrides(
    overrides: list[str], run_mode: RunMode | None = None
) -> tuple[list[str], list[str], list[str]]:
    """(task, plain, Hydra's ``hydra.*``) overrides of the command line's; HydraException if
    bad, or if Hydra would refuse them in ``run_mode`` (a sweep over Hydra's own config)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    if run_mode is not None:
        hydra_adapter.check_sweep_overrides(parsed, run_mode)
    hydra_overrides = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o.input_line for o in parsed if not o.is_hydra_override()]
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    return task, plain, hydra_overrides


def planned_jobs(
    sweeper: DictConfig, overrides: list[str], max_jobs: int | None = None
) -> list[list[str]]:
    """Each job's overrides: the grid of Hydra's basic sweeper, as it will expand it;
    InputError, before the grid is expanded, if it has more than ``max_jobs`` jobs.

    ``overrides`` are the command line's task overrides (not ``hydra.*``), which replace
    the sweeper's params of the same key.
    """
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    loader = GlobalHydra.instance().config_loader()  # glob(*) lists a group's options
    parsed = OverridesParser.create(config_loader=loader).parse_overrides([*params, *overrides])
    axes = hydra_adapter.sweep_axes(parsed)
    n_jobs = math.prod(len(axis) for axis in axes.values())
    if max_jobs is not None and n_jobs > max_jobs:
        raise InputError(
            f"the grid has {n_jobs:,} jobs, more than sweep.max_jobs={max_jobs:,}: sweep fewer "
            f"values, or raise the limit with sweep.max_jobs={n_jobs}"
        )
    return [list(itertools.chain(*job)) for job in itertools.product(*axes.values())]


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


def job_config(config_name: str, overrides: list[str], in_full: bool = False) -> DictConfig:
    """The job's composed config. Hydra composes once per choice of config groups (~0.1 s);
    the values (``model.depth=2``) are then set on a copy. ``in_full``: composed from its
    defaults list, as Hydra does for each job."""
    if in_full:
        return compose(config_name, overrides=overrides)
    loader = GlobalHydra.instance().config_loader()
    _, groups, values = hydra_adapter.split_values(loader, overrides)
    return hydra_adapter.set_values(_compose_groups(config_name, groups), values)


@functools.lru_cache(maxsize=64)
def _compose_groups(config_name: str, groups: tuple[str, ...]) -> DictConfig:
    return compose(config_name, overrides=list(groups))


def listing_lines(
    rows: Iterable[tuple[list[str], str, str]], done: set[str] | None = None
) -> Iterator[str]:
    """The job list a dry run prints, a line as each job's (overrides, run name, digest) comes
    in: number, run name, overrides; then a count. When resuming (``done``: the digests of its
    finished jobs), whether each job is done or to run."""
    n_jobs = left = 0
    for n_jobs, (job, name, digest) in enumerate(rows, 1):
        to_run = done is None or digest not in done
        left += to_run
        state = "" if done is None else "to run  " if to_run else "done    "
        yield f"{n_jobs:4}  {state}{name:{NAME_WIDTH}}  {' '.join(job)}"
    count = f"{n_jobs} jobs" + ("" if done is None else f", {n_jobs - left} done, {left} to run")
    yield f"{count} (dry run: nothing trained or written)"


def time_estimate(cfg: DictConfig, n_jobs: int) -> str | None:
    """How long ``n_jobs`` jobs of ``cfg``'s sweep would take at the median time of a job of the
    latest finished sweep in its store and experiment; None if there is none, no store yet
    (a dry run creates none), or no job."""
    uri = tracking.tracking_uri(cfg.tracking.uri)
    database = Path(uri.removeprefix(tracking.SQLITE))
    if not n_jobs or (uri.startswith(tracking.SQLITE) and not database.exists()):
        return None
    try:
        measured = tables.job_seconds(tracking.connect(uri), cfg.tracking.experiment)
    except tracking.StoreError:
        return None
    if measured is None:
        return None
    seconds, sweep_name = measured
    line = f"at {seconds:.3g} s a job (the median of {sweep_name}): {duration(seconds * n_jobs)}"
    workers = launcher_workers(cfg.hydra.launcher)
    if workers is None:
        return f"{line} of work"
    return f"{line} on one worker, {duration(seconds * math.ceil(n_jobs / workers))} on {workers}"


def launcher_workers(launcher: DictConfig) -> int | None:
    """How many jobs joblib's launcher runs at once (its n_jobs, as joblib reads it: -1 is
    every core, -2 all but one); None for another launcher."""
    if "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return None
    from joblib import cpu_count  # the cores joblib may use: its CPU affinity, cgroup quota

    n_jobs = launcher.get("n_jobs") or 1
    return max(1, cpu_count() + 1 + n_jobs) if n_jobs < 0 else n_jobs


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3 h 20 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def checked_jobs(
    config_name: str, cfg: DictConfig, jobs: Iterable[list[str]]
) -> Iterator[tuple[list[str], str, str]]:
    """(overrides, run name, config digest) of each job, composed and validated in turn (only
    one job's config is held at a time); ConfigError (or Hydra's) at the first bad one."""
    # As Hydra composes each job: with the command line's hydra.* (unresolved), and in full
    # when hydra.searchpath adds config groups, which the split of overrides cannot see.
    hydra_overrides = OmegaConf.to_container(cfg.hydra.overrides.hydra)
    in_full = bool(cfg.hydra.searchpath)
    for job in jobs:
        job_cfg = job_config(config_name, [*hydra_overrides, *job], in_full)
        validate(job_cfg)
        yield job, run_name(job_cfg), config_digest(job_cfg)
