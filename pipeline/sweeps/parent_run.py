"""The parent run of a grid sweep or a search, one lifecycle for both: created, reopened or
joined, finished, abandoned.

A launcher (``pipeline.train -m``, ``pipeline.search``) checks every job first, then creates
the parent (``create``), or reopens one to resume it (``find``, ``keep_recorded``, ``join``),
and hands it to the jobs (``Parent``: in the environment for Hydra's jobs). When its jobs
are done, or it is stopped, it ends the sweep (``finish``); a worker whose launcher died
ends it KILLED (``abandon``). The store is the state: a grid's job list is an artifact of its
parent, and each job's identity is its ``config_digest`` tag, so that a sweep can be resumed
from any process without computing a finished job twice. Several processes may work on one
search (its study says which): each joins the parent, and the last to end ends it.
"""

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import DictConfig

from pipeline.job.run import Outcome, run_name
from pipeline.processes.errors import InputError, first_line
from pipeline.store import plots, tables, tracking
from pipeline.sweeps import page
from pipeline.sweeps.grid import NAME_WIDTH

PARENT_ENV = "BACKPROP_LAB_PARENT_RUN"


SWEPT_TAG = "swept"  # what the sweep varies, for its description


WORKER_TAG = "worker_pid"  # on a sweep's job: the process it ran in
JOB_NUMBER_TAG = "job_number"  # on a sweep's job: its number in Hydra's launch, from 0


STOP_GRACE_SECONDS = 10.0  # how long interrupted jobs get to end their runs themselves


LEFT_RUNNING = "its launcher stopped before the job ended"  # why a job left RUNNING ends


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
    return parent_from(os.environ)


def parent_from(env: Mapping[str, str]) -> Parent | None:
    """The sweep's parent, from the environment a job gets (``env``), if it is a sweep's."""
    value = env.get(PARENT_ENV)
    return Parent(**json.loads(value)) if value else None


def job_env_override(parent: Parent) -> str:
    """The Hydra override that hands ``parent`` to every job, whichever launcher runs it and
    however early its worker started: Hydra sets ``hydra.job.env_set`` in the job's process."""
    value = json.dumps(asdict(parent)).replace("\\", "\\\\").replace("'", "\\'")
    return f"++hydra.job.env_set.{PARENT_ENV}='{value}'"


def create(
    client: MlflowClient,
    experiment: str,
    name: str,
    argv: list[str],
    swept: str,
    params: dict[str, str],
    *,
    tags: dict[str, str] | None = None,
    n_jobs: int | None = None,
    record: Callable[[str], None] | None = None,
) -> Parent:
    """A new parent run ``name`` of a sweep or a search, launched by this process: the command
    line's overrides ``argv``, what it varies (``swept``, and ``params`` as ``sweep.*``
    params), its ``tags``; then ``record(run_id)`` keeps what a resume needs (a grid's job
    list, a search's study). Should that fail or be stopped, the parent ends FAILED or KILLED
    (as far as the store lets it) and the error is raised."""
    overrides = " ".join(argv) or "(none)"
    tags = {tracking.SWEEP_TAG: overrides, SWEPT_TAG: swept, **launcher_tag(), **(tags or {})}
    run_id = tracking.start_run(client, experiment, name, tags)
    try:
        sweep_params = {f"sweep.{key}": value for key, value in params.items()}
        tracking.log_params(client, run_id, sweep_params | {"sweep.overrides": overrides})
        if record:
            record(run_id)
    except BaseException as error:
        with contextlib.suppress(Exception):  # the store may refuse this too: the first error tells
            stopped = isinstance(error, KeyboardInterrupt)
            client.set_terminated(run_id, "KILLED" if stopped else "FAILED")
        raise
    return Parent(run_id, experiment, client.tracking_uri, n_jobs, os.getpid())


def parent_name(sweep_name: str) -> str:
    """A new sweep's parent run name, e.g. ``default-20261128-100412``."""
    return f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def launcher_tag() -> dict[str, str]:
    """Which process launches the sweep's jobs: a report can tell whether it still runs."""
    return {tables.LAUNCHER_TAG: tables.launcher_id()}


def check_resume_target(which: str) -> None:
    """InputError if ``which``, given to --resume, is an override (its value forgotten): no
    store is opened for a mistaken command line."""
    if "=" in which:
        raise InputError(f"--resume takes a parent run id or latest, not {which}")


def find(client: MlflowClient, which: str, kind: str = "sweep") -> Run:
    """The parent run ``which`` of a ``kind`` ("sweep": a grid's, or "search"): a run id, or
    ``latest``, the newest of that kind; InputError if it is not one, naming the command that
    resumes it if it is the other kind's."""
    if which == "latest":
        run = tables.latest_sweep(client, kind)
    else:
        run = tracking.get_run(client, which)
    if run is None or tracking.SWEEP_TAG not in run.data.tags:
        what = f"the store has no {kind}" if run is None else f"run {which} is not a sweep's parent"
        raise InputError(f"cannot resume: {what} (in {client.tracking_uri})")
    is_search = tables.STUDY_TAG in run.data.tags
    if is_search != (kind == "search"):
        what, command = ("a search", "search") if is_search else ("a grid sweep", "sweep")
        resume = f"make {command} RESUME={run.info.run_id}"
        raise InputError(f"{run.info.run_name} is {what}: resume it with {resume}")
    return run


def keep_recorded(
    what: str, recorded: list[str], given: list[str], per_process: Sequence[str] = ()
) -> list[str]:
    """The overrides a resumed or joined sweep or search (``what``) runs with: those it
    recorded, then ``per_process`` (this process's, which a search's may change); InputError naming
    the ``given`` ones it would otherwise drop."""
    extra = [o for o in given if o not in recorded and o not in per_process]
    if extra:
        raise InputError(f"{what} runs with the overrides it recorded: drop {' '.join(extra)}")
    return [*recorded, *per_process]


def finished_digests(client: MlflowClient, parent_run_id: str) -> set[str]:
    children = tracking.child_runs(client, parent_run_id)
    return {
        c.data.tags["config_digest"]
        for c in children
        if c.info.status == "FINISHED" and "config_digest" in c.data.tags
    }


def join(
    client: MlflowClient,
    run: Run,
    others: Sequence[str] = (),
    n_jobs: int | None = None,
    on_reopen: Callable[[], None] | None = None,
) -> Parent:
    """The parent ``run``, this process launching jobs of it. Unless it is RUNNING with
    ``others`` (a search's other processes, host:pid) working on it, it is reopened: its
    children still RUNNING end as their results say (``LEFT_RUNNING``), ``on_reopen()`` ends
    what else was left running (a search's trials), and it is RUNNING again, launched by this
    process."""
    run_id = run.info.run_id
    if run.info.status != "RUNNING" or not others:
        tracking.end_running_children(client, run_id, LEFT_RUNNING)
        if on_reopen:
            on_reopen()
        client.update_run(run_id, status="RUNNING")
        tracking.log_results(client, run_id, tags=launcher_tag())
    return Parent(run_id, run.info.experiment_id, client.tracking_uri, n_jobs, os.getpid())


def fail_dead_job(parent: Parent, worker_pid: int | None, reason: str, since_ms: int) -> int | None:
    """After a worker died and took its pool with it: the job of the worker that died first
    (``worker_pid``), if it had one, ends FAILED with ``reason``; the jobs the pool's end
    interrupted end KILLED, to run again (each as its results say:
    ``tracking.end_left_running``). ``parent.done`` then holds every job that ended since
    ``since_ms`` (ms since the epoch). The number of jobs FAILED (0 if the worker died
    between two jobs), or None if no worker's death was seen (no pidfd to watch it)."""
    if worker_pid is None:
        return None
    client = tracking.connect(parent.tracking_uri)
    running = tracking.child_runs(client, parent.run_id, running_only=True)
    dead = [r for r in running if r.data.tags.get(WORKER_TAG) == str(worker_pid)]
    for run in running:
        if run in dead:
            tracking.end_left_running(client, run, reason, unfinished="FAILED")
        else:
            why = "its worker was stopped when another worker died; it runs again"
            tracking.end_left_running(client, run, why)
    ended = [
        c.data.tags.get("config_digest")
        for c in tracking.child_runs(client, parent.run_id)
        if c.info.status in ("FINISHED", "FAILED") and c.info.start_time >= since_ms
    ]
    parent.done = sorted(set(parent.done) | set(ended) - {None})
    return len(dead)


def end_job_without_result(parent: Parent, job_num: int, since_ms: int, why: str) -> str:
    """A job whose process ended without a result, outside the launcher (a Slurm job
    cancelled, over its time limit, killed): its run, started since ``since_ms`` (ms since
    the epoch), ends as ``tracking.end_left_running`` says (FAILED, tagged ``why``, as a dead
    worker's job) if the job left it RUNNING. The line saying how it ended."""
    client = tracking.connect(parent.tracking_uri)
    runs = [
        run
        for run in tracking.child_runs(client, parent.run_id)
        if run.data.tags.get(JOB_NUMBER_TAG) == str(job_num) and run.info.start_time >= since_ms
    ]
    of = f"/{parent.n_jobs}" if parent.n_jobs else ""
    if not runs:
        return f"[job {job_num + 1}{of}] {why}, before its run started"
    run, reason = runs[-1], why
    status = run.info.status
    if status == "RUNNING":
        status = tracking.end_left_running(client, run, why, unfinished="FAILED")
    else:
        tags = run.data.tags
        reason = f"{why}: {tags.get(tracking.KILLED_REASON) or tags.get(tracking.FAILURE_REASON)}"
    return f"[job {job_num + 1}{of}] {run.info.run_name:{NAME_WIDTH}} {status:8} {reason}"


def wait_for_running_jobs(parent: Parent, seconds: float = STOP_GRACE_SECONDS) -> None:
    """Until no job of the sweep is RUNNING in the store, or ``seconds`` have passed: jobs
    that were interrupted send their points and end their runs themselves."""
    client = tracking.connect(parent.tracking_uri)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not tracking.child_runs(client, parent.run_id, running_only=True):
            return
        time.sleep(0.2)


def abandon(parent: Parent, why: str, run_id: str | None = None, others: Sequence[str] = ()):
    """For a sweep or search whose launcher died, in one of its workers: the run of the
    worker's job in flight, ``run_id``, ends as its results say (KILLED, tagged with ``why``;
    the other workers end their own runs), and so does the parent unless ``others`` (a
    search's other processes) still work on it; ``RESUME=`` picks it up again."""
    client = tracking.connect(parent.tracking_uri)
    if run_id:
        tracking.end_left_running(client, client.get_run(run_id), why)
    if not others and tracking.is_running(client, parent.run_id):
        tracking.end_killed(client, parent.run_id, why)


def finish(parent: Parent, status: str, seconds: float, others: Sequence[str] = ()):
    """The launcher's end of a sweep or search: its jobs still RUNNING end (``LEFT_RUNNING``),
    then the sweep's outcome is recorded on the parent, computed over all its jobs, and the
    parent ends ``status``. While ``others`` (a search's other processes) still work on it,
    only this process's part ends (``leave``). On a full disk, FullStoreError: the parent ends
    FAILED if the store can still record that."""
    client = tracking.connect(parent.tracking_uri)
    if others:
        leave(client, parent, status, others)
        return
    try:
        tracking.end_running_children(client, parent.run_id, LEFT_RUNNING)
        table = tables.sweep_table(client, parent.run_id)
        swept = client.get_run(parent.run_id).data.tags.get(SWEPT_TAG, "")
        record_sweep(client, parent, table, swept)
        record_findings_or_warn(client, parent.run_id, table)
        tracking.log_results(client, parent.run_id, final=tables.sweep_metrics(table))
        client.set_terminated(parent.run_id, status)
    except Exception as error:
        if not tracking.full_disk(error):
            raise
        raise tracking.FullStoreError(full_disk_line(parent, end_failed(client, parent))) from None
    print(tables.summary(table, seconds, status), flush=True)
    print(f"runs table (after `make ui`): {tracking.runs_table_url(parent.experiment_id)}")


def record_findings_or_warn(client: MlflowClient, parent_run_id: str, table: pd.DataFrame) -> None:
    """The sweep's importance and report.html on its parent (``page.record_findings``); an
    error there (but a full disk) is one warning line: the sweep's outcome is recorded anyway."""
    try:
        page.record_findings(client, parent_run_id, table)
    except Exception as error:
        if tracking.full_disk(error):
            raise
        print(f"warning: the sweep's page was not recorded: {first_line(error)}", flush=True)


def leave(client: MlflowClient, parent: Parent, status: str, others: Sequence[str]) -> None:
    """This process's jobs still RUNNING end (``LEFT_RUNNING``); the parent is left to
    ``others``, the last of which ends it."""
    me = tables.launcher_id()
    for run in tracking.child_runs(client, parent.run_id, running_only=True):
        if run.data.tags.get(tables.LAUNCHER_TAG) == me:
            tracking.end_left_running(client, run, LEFT_RUNNING)
    print(
        f"this process's trials ended ({status.lower()}); the search goes on in "
        f"{', '.join(others)}: the last to end ends its parent run",
        flush=True,
    )


def end_failed(client: MlflowClient, parent: Parent) -> bool:
    """On a full disk: the parent's children still RUNNING end KILLED and the parent FAILED,
    as far as the store can still be written (updating a row may fit where adding one does
    not); whether the parent ended."""
    with contextlib.suppress(Exception):
        tracking.end_running_children(client, parent.run_id)
    try:
        client.set_terminated(parent.run_id, "FAILED")
    except Exception:
        return False
    return True


def full_disk_line(parent: Parent, ended: bool) -> str:
    """The one line of a sweep or search that a full disk stopped, saying how its parent was
    left: ``ended`` FAILED, or RUNNING."""
    left = "ended FAILED" if ended else "is left RUNNING: not even its status can be written"
    return tracking.full_disk_line(
        parent.tracking_uri,
        f"the parent run {parent.run_id} {left}; free space, then resume it with RESUME=latest",
    )


def record_sweep(client: MlflowClient, parent: Parent, table: pd.DataFrame, swept: str):
    """The comparison table, the best child, all cost curves, the gradients' ratio by depth
    and a description, on the parent."""
    parent_run_id = parent.run_id
    finished = table[table.status == "FINISHED"]
    tags = {tracking.NOTE: description(table, swept, parent_run_id, parent.n_jobs)}
    if len(finished):
        tags |= {"best_run_id": finished.run_id.iloc[0], "best_run": finished.run.iloc[0]}
    tracking.log_results(client, parent_run_id, tags=tags)
    curves = tables.train_cost_curves(client, table.run_id)
    by_name = {row.run: curves[row.run_id] for row in table.itertuples()}
    figure = plots.overlaid_curves(by_name, "train cost of every job")
    files = {
        "comparison.csv": lambda path: path.write_text(table.to_csv(index=False)),
        "cost_curves.png": partial(plots.save_png, figure),
    }
    ratios = tables.gradient_ratios(client, table)
    if len(ratios):  # runs with learning dynamics (tracking.dynamics)
        dynamics = plots.gradient_ratio_by_depth(ratios)
        files["dynamics_by_depth.png"] = partial(plots.save_png, dynamics)
    tracking.log_files(client, parent_run_id, files)


def description(table: pd.DataFrame, swept: str, parent_run_id: str, n_jobs: int | None) -> str:
    """The few lines the parent run's page shows: what was swept, how it went, what is best."""
    n_jobs = max(n_jobs or 0, len(table))
    never = f", {n_jobs - len(table)} never ran" if n_jobs > len(table) else ""
    what = swept or "the command line overrides"
    lines = [f"Swept {what}: {n_jobs} jobs, {tables.counts_line(table)}{never}."]
    finished = table[table.status == "FINISHED"]
    if len(finished):
        best = finished.iloc[0]
        lines.append(f"Best run: **{best.run}** ({tables.best_run_measures(best)}).")
    lines.append(f'Report: `make report ARGS="--sweep {parent_run_id}"` (tables and plots).')
    return "\n\n".join(lines)


def report_progress(cfg: DictConfig, outcome: Outcome, parent: Parent, job_num: int) -> None:
    """One line per finished job of a sweep."""
    r = outcome.result
    of = f"/{parent.n_jobs}" if parent.n_jobs else ""
    line = f"{run_name(cfg):{NAME_WIDTH}} {outcome.status:8} {r.accuracies}  {r.seconds:.1f}s"
    print(f"[job {job_num + 1}{of}] {line}", flush=True)


def failure_line(parent: Parent, what: str, error: Exception) -> str:
    """What stopped the sweep or search (``what``) of ``parent``, in one line."""
    if isinstance(error, tracking.StoreError):
        return str(error)
    if tracking.full_disk(error):  # and yet its end was recorded: the parent ended FAILED
        return full_disk_line(parent, ended=True)
    return f"the {what} stopped: {type(error).__name__}: {first_line(error)}"
