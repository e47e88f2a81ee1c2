"""A grid sweep's jobs, planned as Hydra's basic sweeper will launch them, and checked.

Before any run is created, the launcher expands the sweep's overrides into its jobs
(``planned_jobs``), composes and validates each job's config (``plan``), and lists them
for a dry run (``dry_run_listing``). A search composes its trials with ``job_config`` too.
"""

import functools
from dataclasses import dataclass

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.job.config import config_digest, validate
from pipeline.job.run import run_name
from pipeline.sweeps import hydra_adapter


def dry_run_listing(sweep: "Plan", done: set[str] | None = None) -> str:
    """The job list a dry run prints: number, run name, overrides, and a count; when resuming
    (``done``: the digests of its finished jobs), whether each job is done or to run."""
    width = max(len(name) for name in sweep.names)
    rows = zip(sweep.names, sweep.jobs, sweep.digests, strict=True)
    lines = []
    for number, (name, job, digest) in enumerate(rows, 1):
        state = "" if done is None else "done    " if digest in done else "to run  "
        lines.append(f"{number:4}  {state}{name:{width}}  {' '.join(job)}")
    count = f"{len(sweep.jobs)} jobs"
    if done is not None:
        left = sum(digest not in done for digest in sweep.digests)
        count += f", {len(sweep.jobs) - left} done, {left} to run"
    return "\n".join([*lines, f"{count} (dry run: nothing trained or written)"])


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


def plan(config_name: str, cfg: DictConfig, argv: list[str]) -> Plan:
    """Every job of the sweep ``cfg`` (composed with Hydra's node) checked; raises ConfigError
    (or Hydra's error) on the first bad one. Needs Hydra's compose API initialised on conf/.
    """
    jobs = planned_jobs(cfg.hydra.sweeper, argv)
    # As Hydra composes each job: with the command line's hydra.* (unresolved), and in full
    # when hydra.searchpath adds config groups, which the split of overrides cannot see.
    hydra_overrides = OmegaConf.to_container(cfg.hydra.overrides.hydra)
    in_full = bool(cfg.hydra.searchpath)
    configs = [job_config(config_name, [*hydra_overrides, *job], in_full) for job in jobs]
    for job_cfg in configs:
        validate(job_cfg)
    params = dict(cfg.hydra.sweeper.get("params") or {})
    names = [run_name(c) for c in configs]
    return Plan(cfg.sweep_name, argv, params, jobs, names, [config_digest(c) for c in configs])


def split_overrides(
    overrides: list[str], run_mode: RunMode | None = None
) -> tuple[list[str], list[str], list[str]]:
    """(task, plain, hydra's own) of the command line's overrides; HydraException if bad, or
    if Hydra would refuse them in ``run_mode`` (a sweep over Hydra's own config)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    if run_mode is not None:
        hydra_adapter.check_sweep_overrides(parsed, run_mode)
    hydra_own = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o.input_line for o in parsed if not o.is_hydra_override()]
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    return task, plain, hydra_own


def planned_jobs(sweeper: DictConfig, overrides: list[str]) -> list[list[str]]:
    """Each job's overrides: the grid of Hydra's basic sweeper, as it will expand it.

    ``overrides`` are the command line's task overrides (not ``hydra.*``), which replace
    the sweeper's params of the same key.
    """
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    loader = GlobalHydra.instance().config_loader()  # glob(*) lists a group's options
    parsed = OverridesParser.create(config_loader=loader).parse_overrides([*params, *overrides])
    return hydra_adapter.grid_of(parsed)


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
