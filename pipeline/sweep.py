"""A Hydra sweep as one MLflow parent run with one child run per job, and its resumption.

The entry point (``pipeline.train -m``) does everything that can fail before Hydra
launches a job: it plans and checks every job's config (``plan``), then creates the
parent run (``start``) or reopens one (``resume``), and hands it to the jobs through the
environment (``Parent``). When Hydra returns, or is interrupted, it ends the sweep
(``finish``). The store is the state: a sweep's job list is an artifact of its parent,
and each job's identity is its ``config_digest`` tag, so that a sweep can be resumed
from any process without computing a finished job twice. A search (``pipeline.search``)
makes, reopens and ends its parent with the same functions (``start_parent``, ``reopen``,
``finish``).
"""

import functools
import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
from hydra import compose
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from pipeline import hydra_once, plots, results, tracking
from pipeline.config import config_digest, validate
from pipeline.errors import InputError
from pipeline.job import Outcome, run_name

PARENT_ENV = "BACKPROP_LAB_PARENT_RUN"
SWEPT_TAG = "swept"  # what the sweep varies, for its description
WORKER_TAG = "worker_pid"  # on a sweep's job: the process it ran in
STOP_GRACE_SECONDS = 10.0  # how long interrupted jobs get to end their runs themselves


@dataclass
class Parent:
    """What every job of a sweep needs to know about the sweep, passed in the environment."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    n_jobs: int | None
    launcher_pid: int = 0
    done: list[str] = field(default_factory=list)  # digests of finished jobs: skipped


def parent_from_env() -> Parent | None:
    value = os.environ.get(PARENT_ENV)
    return Parent(**json.loads(value)) if value else None


def job_env_override(parent: Parent) -> str:
    """The Hydra override that hands ``parent`` to every job, whichever launcher runs it and
    however early its worker started: Hydra sets ``hydra.job.env_set`` in the job's process."""
    value = json.dumps(asdict(parent)).replace("\\", "\\\\").replace("'", "\\'")
    return f"++hydra.job.env_set.{PARENT_ENV}='{value}'"


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
        ConfigLoaderImpl.validate_sweep_overrides_legal(parsed, run_mode, from_shell=True)
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
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


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
    _, groups, values = hydra_once.split_values(loader, overrides)
    return hydra_once.set_values(_compose_groups(config_name, groups), values)


@functools.lru_cache(maxsize=64)
def _compose_groups(config_name: str, groups: tuple[str, ...]) -> DictConfig:
    return compose(config_name, overrides=list(groups))


def start(client: MlflowClient, experiment: str, sweep: Plan) -> Parent:
    """A new parent run for ``sweep``, its job list recorded as an artifact."""
    params = {f"sweep.{key}": value for key, value in sweep.params.items()}
    name = parent_name(sweep.name)
    run_id = start_parent(client, experiment, name, sweep.argv, sweep.swept, params)
    record = {
        "argv": sweep.argv,
        "jobs": sweep.jobs,
        "names": sweep.names,
        "digests": sweep.digests,
    }
    tracking.log_files(client, run_id, {results.JOBS_FILE: partial(_write_json, record)})
    return Parent(run_id, experiment, client.tracking_uri, sweep.n_jobs, os.getpid())


def parent_name(sweep_name: str) -> str:
    """A new sweep's parent run name, e.g. ``default-20261128-100412``."""
    return f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_parent(
    client: MlflowClient,
    experiment: str,
    name: str,
    argv: list[str],
    swept: str,
    params: dict[str, str],
    tags: dict[str, str] | None = None,
) -> str:
    """A new parent run ``name`` of a sweep or a search: the command line's overrides
    ``argv``, what it varies (``swept``), its ``params`` and ``tags``, and this process as
    its launcher; its run id."""
    overrides = " ".join(argv) or "(none)"
    tags = {tracking.SWEEP_TAG: overrides, SWEPT_TAG: swept, **launcher_tag(), **(tags or {})}
    run_id = tracking.start_run(client, experiment, name, tags)
    tracking.log_params(client, run_id, params | {"sweep.overrides": overrides})
    return run_id


def launcher_tag() -> dict[str, str]:
    """Which process launches the sweep's jobs: a report can tell whether it still runs."""
    return {results.LAUNCHER_TAG: results.launcher_id()}


def _write_json(value, path: Path) -> None:
    path.write_text(json.dumps(value, indent=1))


def check_resume_target(which: str) -> None:
    """InputError if ``which``, given to --resume, is an override (its value forgotten): no
    store is opened for a mistaken command line."""
    if "=" in which:
        raise InputError(f"--resume takes a parent run id or latest, not {which}")


def find(client: MlflowClient, which: str) -> Run:
    """The parent run ``which`` (a run id, or ``latest``); InputError if it is not a sweep's."""
    run = results.latest_sweep(client) if which == "latest" else tracking.get_run(client, which)
    if run is None or tracking.SWEEP_TAG not in run.data.tags:
        what = "the store has no sweep" if run is None else f"run {which} is not a sweep's parent"
        raise InputError(f"cannot resume: {what} (in {client.tracking_uri})")
    return run


def finished_digests(client: MlflowClient, parent_run_id: str) -> set[str]:
    children = tracking.child_runs(client, parent_run_id)
    return {
        c.data.tags["config_digest"]
        for c in children
        if c.info.status == "FINISHED" and "config_digest" in c.data.tags
    }


def resume(client: MlflowClient, run: Run, sweep: Plan, why: str) -> Parent:
    """Reopen the parent ``run`` for the jobs of ``sweep`` that have not finished.

    Its children still marked RUNNING were left so by a launcher that stopped: they end
    KILLED, tagged with ``why``.
    """
    run_id = run.info.run_id
    reopen(client, run_id, why)
    done = finished_digests(client, run_id) & set(sweep.digests)
    return Parent(
        run_id, run.info.experiment_id, client.tracking_uri, sweep.n_jobs, os.getpid(), sorted(done)
    )


def reopen(client: MlflowClient, run_id: str, why: str) -> None:
    """The parent ``run_id`` RUNNING again, launched by this process; its children still
    RUNNING end KILLED, tagged with ``why``."""
    tracking.end_running_children(client, run_id, why)
    client.update_run(run_id, status="RUNNING")
    tracking.log_results(client, run_id, tags=launcher_tag())


def fail_dead_job(parent: Parent, worker_pid: int | None, reason: str, since_ms: int) -> bool:
    """After a worker died and took its pool with it: the job of the worker that died first
    ends FAILED with ``reason``; the jobs the pool's end interrupted end KILLED, to run again.
    ``parent.done`` then holds every job that ended since ``since_ms`` (ms since the epoch).
    False if no job can be told apart as the dead worker's."""
    client = tracking.connect(parent.tracking_uri)
    running = tracking.child_runs(client, parent.run_id, running_only=True)
    dead = [r for r in running if r.data.tags.get(WORKER_TAG) == str(worker_pid)]
    if not dead:
        return False
    for run in running:
        run_id = run.info.run_id
        if run in dead:
            tracking.log_results(client, run_id, tags={"failure_reason": reason})
            client.set_terminated(run_id, "FAILED")
        else:
            why = "its worker was stopped when another worker died; it runs again"
            tracking.end_killed(client, run_id, why)
    ended = [
        c.data.tags.get("config_digest")
        for c in tracking.child_runs(client, parent.run_id)
        if c.info.status in ("FINISHED", "FAILED") and c.info.start_time >= since_ms
    ]
    parent.done = sorted(set(parent.done) | set(ended) - {None})
    return True


def wait_for_running_jobs(parent: Parent, seconds: float = STOP_GRACE_SECONDS) -> None:
    """Until no job of the sweep is RUNNING in the store, or ``seconds`` have passed: jobs
    that were interrupted send their points and end their runs themselves."""
    client = tracking.connect(parent.tracking_uri)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not tracking.child_runs(client, parent.run_id, running_only=True):
            return
        time.sleep(0.2)


def abandon(parent: Parent, why: str) -> None:
    """End the parent and its children still RUNNING as KILLED, tagged with ``why``: for a
    sweep whose launcher died; ``make sweep RESUME=`` picks it up again."""
    client = tracking.connect(parent.tracking_uri)
    tracking.end_running_children(client, parent.run_id, why)
    if tracking.is_running(client, parent.run_id):
        tracking.end_killed(client, parent.run_id, why)


def finish(parent: Parent, status: str, seconds: float) -> None:
    """Record the sweep's outcome on the parent run and end it: its children still RUNNING
    end KILLED, then its metrics and artifacts are computed over all its jobs."""
    client = tracking.connect(parent.tracking_uri)
    tracking.end_running_children(client, parent.run_id)
    table = results.sweep_table(client, parent.run_id)
    swept = client.get_run(parent.run_id).data.tags.get(SWEPT_TAG, "")
    record_sweep(client, parent, table, swept)
    tracking.log_results(client, parent.run_id, final=results.sweep_metrics(table))
    client.set_terminated(parent.run_id, status)
    print(results.summary(table, seconds, status), flush=True)
    print(f"runs table (after `make ui`): {tracking.runs_table_url(parent.experiment_id)}")


def record_sweep(client: MlflowClient, parent: Parent, table: pd.DataFrame, swept: str):
    """The comparison table, the best child, all cost curves and a description, on the parent."""
    parent_run_id = parent.run_id
    finished = table[table.status == "FINISHED"]
    tags = {tracking.NOTE: description(table, swept, parent_run_id, parent.n_jobs)}
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


def description(table: pd.DataFrame, swept: str, parent_run_id: str, n_jobs: int | None) -> str:
    """The few lines the parent run's page shows: what was swept, how it went, what is best."""
    n_jobs = max(n_jobs or 0, len(table))
    never = f", {n_jobs - len(table)} never ran" if n_jobs > len(table) else ""
    what = swept or "the command line overrides"
    lines = [f"Swept {what}: {n_jobs} jobs, {results.counts_line(table)}{never}."]
    finished = table[table.status == "FINISHED"]
    if len(finished):
        best = finished.iloc[0]
        lines.append(f"Best run: **{best.run}** ({results.best_run_measures(best)}).")
    lines.append(f'Report: `make report ARGS="--sweep {parent_run_id}"` (tables and plots).')
    return "\n\n".join(lines)


def report_progress(cfg: DictConfig, outcome: Outcome, parent: Parent, job_num: int) -> None:
    """One line per finished job of a sweep."""
    r = outcome.result
    of = f"/{parent.n_jobs}" if parent.n_jobs else ""
    line = f"{run_name(cfg):16} {outcome.status:8} {r.accuracies}  {r.seconds:.1f}s"
    print(f"[job {job_num + 1}{of}] {line}", flush=True)
