"""``python -m pipeline.search [--resume PARENT_RUN_ID|latest] [overrides]``: a Bayesian search.

    make search N=30 [ARGS="overrides"] [RESUME=<parent run id>|latest]

Optuna's TPE sampler proposes each trial's values from the space in ``conf/sweep/search.yaml``
(``search.space``); each trial is one job (``pipeline.job.run.run_job``) whose config Hydra's
compose API builds, as a grid's jobs are, and a child run of the search's parent run. The
study maximises the validation accuracy. At each logged point a trial reports ``-val_cost``
(higher is better, as in the study's direction, in which pruners compare intermediate
values: the raw cost would prune the best trials), and the pruner (``search.pruner``) may
end it there: its run ends KILLED, tagged ``pruned_at``, and the trial PRUNED.

Why workers and not a Hydra sweeper: Optuna spreads a study over processes and machines by
having each run ``study.optimize`` on one storage, so ``search.workers`` processes here,
another ``make search`` on the same study, or one on another machine with a server database,
are the same mechanism; and Hydra instantiates sweepers only from its ``hydra_plugins``
namespace package, outside this project's layout.

The study lives in a database (``search.storage``, by default ``optuna.db`` beside a SQLite
store), named after the parent run or ``search.study``. It records its parent's run id and
the command line's overrides, so that a process joining it (the same ``search.study``) or
resuming it (``--resume``) adds trials to the same parent, with the same config. Each
process on the study registers itself there; the last one to stop ends the parent.

The space is ``pipeline.sweeps.dimensions``'s, the study's storage and pruner
``pipeline.sweeps.studies``'s.
"""

import argparse
import itertools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import partial

import optuna
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from joblib import Parallel, delayed
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from pipeline.job import config
from pipeline.job.loop import Point, Stop
from pipeline.job.run import Outcome, run_job, run_name
from pipeline.processes import entry, settings, stopping, workers
from pipeline.processes.errors import InputError
from pipeline.store import tables, tracking
from pipeline.sweeps import dimensions, grid, parent_run, studies

config.register()
TRIAL_TAG = "optuna_trial"  # a trial's run: its number in the study
STORAGE_TAG = "optuna_storage"  # a search's parent: the study's storage (password hidden)
JOIN_SECONDS = 60.0  # how long a joining process waits for the study's creator to make its parent


@dataclass
class Launch:
    """What each worker needs to run trials of the study: picklable, for joblib's workers."""

    config_name: str
    overrides: list[str]  # every trial's config: these, then the sampled values
    space: dict[str, str]  # key -> a dimension in Hydra's sweep syntax
    storage: str  # the study's database URL
    study: str
    parent: parent_run.Parent
    launcher: str  # host:pid of the process that started the workers
    n_trials: int  # this process's trials, over all its workers
    workers: int
    seed: int  # the config's seed: each trial's sampler seed derives from it
    n_before: int  # the study's trials before this launch


# -- a worker: trials one at a time ----------------------------------------------------------


class Pruning:
    """A training listener that reports a trial's held-out cost, negated (higher is better,
    as the study maximises accuracy), at each logged point, and stops training at the point
    the study's pruner gives up on it."""

    def __init__(self, trial: optuna.Trial, pruner_name: str) -> None:
        self.trial, self.pruner_name = trial, pruner_name

    def __call__(self, point: Point) -> Stop | None:
        if workers.state.launcher_died:  # the trial is being ended FAIL (abandon): nothing to tell
            return None
        curve = "val_cost" if "val_cost" in point.costs else "test_cost"
        cost = point.costs[curve]
        if not math.isfinite(cost):  # the loop stops a diverging run itself
            return None
        self.trial.report(-cost, point.iteration)
        if point.last or not self.trial.should_prune():
            return None
        return Stop(f"pruned by the {self.pruner_name} pruner: {curve} {cost:.4g}", pruned=True)


def objective(launch: Launch, space: dict, pruner_name: str, trial: optuna.Trial) -> float:
    """One trial: its values sampled, its config composed, its job run under the parent; the
    selection accuracy. A pruned trial raises TrialPruned; a diverged one returns NaN, which
    Optuna records as FAIL, so the sampler does not take it for a poor result."""
    values = {key: dimensions.suggest(trial, key, d) for key, d in space.items()}
    overrides = [*launch.overrides, *(f"{key}={value}" for key, value in values.items())]
    cfg = grid.job_config(launch.config_name, overrides)
    if cfg.search.storage:  # recorded with the trial's config.yaml; the worker has its own
        cfg.search.storage = studies.hidden_password(cfg.search.storage)
    trial.set_user_attr(studies.PROCESS_ATTR, launch.launcher)  # its process, if it stops
    tags = {
        "hydra.overrides": studies.hidden_password(" ".join(overrides)),
        "sweep_id": launch.parent.run_id,
        parent_run.JOB_NUMBER_TAG: trial.number,
        TRIAL_TAG: trial.number,
        tables.STUDY_TAG: launch.study,
        tables.LAUNCHER_TAG: launch.launcher,
        parent_run.WORKER_TAG: os.getpid(),
    }
    outcome = run_job(
        cfg,
        tags=tags,
        parent_run_id=launch.parent.run_id,
        experiment_id=launch.parent.experiment_id,
        listeners=[Pruning(trial, pruner_name), stopping.raise_if_stopped],
        guard=workers.state.guard,
    )
    trial.set_user_attr(studies.RUN_ATTR, outcome.run_id)
    print(progress_line(cfg, trial.number, outcome), flush=True)
    result = outcome.result
    if result.pruned:
        raise optuna.TrialPruned(f"at iteration {result.stopped_at}")
    return math.nan if result.diverged_at is not None else result.selection_accuracy


def progress_line(cfg: DictConfig, number: int, outcome: Outcome) -> str:
    r = outcome.result
    if r.pruned:
        status, how = tables.PRUNED, f"at iteration {r.stopped_at}"
    else:
        status, how = outcome.status, r.accuracies
    return f"[trial {number}] {run_name(cfg):16} {status:8} {how}  {r.seconds:.1f}s"


def work(launch: Launch, n_trials: int) -> None:
    """A worker: ``n_trials`` trials of the study, one at a time (Optuna's ``optimize``)."""
    settings.tune_for_jobs()  # a worker process's own settings, as a sweep's
    stopping.catch_stops()
    stopping.watch_launcher(launch.parent.launcher_pid, partial(abandon_search, launch))
    # one line per trial (progress_line): the job's own log lines and Optuna's stay quiet
    for name in ("pipeline.job.loop", "pipeline.job.run"):
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with initialize_config_dir(config_dir=str(config.CONF), version_base="1.3"):
        cfg = grid.job_config(launch.config_name, launch.overrides)
        sampler = studies.TrialSeededSampler(launch.seed)
        storage = studies.open_storage(launch.storage)
        study = studies.load(storage, launch.study, sampler=sampler, pruner=studies.pruner(cfg))
        run = partial(objective, launch, dimensions.distributions(launch.space), cfg.search.pruner)
        study.optimize(run, n_trials=n_trials)


def run_workers(launch: Launch) -> None:
    """The launch's trials shared among its workers, in joblib's processes (in this one for
    a single worker: no process to start)."""
    each, more = divmod(launch.n_trials, launch.workers)
    shares = [each + (i < more) for i in range(launch.workers)]
    jobs = [delayed(work)(launch, n) for n in shares if n]
    Parallel(n_jobs=len(jobs), backend="loky")(jobs)


# -- the launching process -------------------------------------------------------------------


def compose_search(config_name: str, task: list[str]) -> tuple[DictConfig, dict, list[str]]:
    """(the config, the space, the plain overrides) of the command line's task overrides,
    with ``sweep=search`` unless another sweep is given; ConfigError (or Hydra's) if a value
    is bad, a dimension is not one, or a corner of the space is invalid."""
    parsed = OverridesParser.create().parse_overrides(task)
    if not any(o.key_or_group == "sweep" for o in parsed):
        task = ["sweep=search", *task]
    plain = grid.split_overrides(task)[1]
    cfg = compose(config_name, overrides=plain)
    config.validate(cfg)
    config.check_trial(cfg)
    space, plain = dimensions.split_space(cfg.search.space, task)
    if not space:
        raise InputError(
            f"sweep={cfg.sweep_name} has no search space: give one in search.space or on the "
            "command line, e.g. 'model.depth=range(0,5)'"
        )
    dimensions.check_corners(config_name, plain, dimensions.distributions(space))
    return cfg, space, plain


def prepare(argv: list[str], resume: str | None) -> Launch:
    """Check the search, then create its study and parent, or join or reopen them; errors
    are InputError, ConfigError or Hydra's, before any trial runs."""
    config_name = "config"
    if resume:
        parent_run.check_resume_target(resume)
    task, _, hydra_overrides = grid.split_overrides(argv)
    if hydra_overrides:
        raise InputError(
            f"{hydra_overrides[0]} is Hydra's: a search's settings are search.* "
            "(search.n_trials, search.workers, ...)"
        )
    per_process = per_process_overrides(task)
    with initialize_config_dir(config_dir=str(config.CONF), version_base="1.3"):
        cfg, space, plain = compose_search(config_name, task)
        uri = tracking.tracking_uri(cfg.tracking.uri)
        client = tracking.connect(uri)
        url = studies.storage_url(cfg.search.storage, uri)
        storage = studies.open_storage(url)
        name = cfg.search.study
        study = (
            resumed(client, storage, url, resume)
            if resume
            else name and studies.load(storage, name)
        )
        if study and study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
            why = "does not maximise one value (a search's validation accuracy)"
            raise InputError(f"the study {study.study_name} {why}: give another search.study=")
        parent = None
        if not study:
            name = name or parent_run.parent_name(cfg.sweep_name)
            study, parent = create(client, cfg, storage, url, name, space, task, per_process)
        if parent is None:  # joined or resumed: the study's config, this process's settings
            run_id = parent_run_id(study)
            recorded = study.user_attrs[studies.OVERRIDES_ATTR]
            what = f"the study {study.study_name}"
            overrides = parent_run.keep_recorded(what, recorded, task, per_process)
            cfg, space, plain = compose_search(config_name, overrides)
            parent = join_study(client, study, run_id)
    n_before = len(study.get_trials(deepcopy=False))
    return Launch(
        config_name,
        plain,
        space,
        url,
        study.study_name,
        parent,
        tables.launcher_id(),
        cfg.search.n_trials,
        cfg.search.workers,
        cfg.seed,
        n_before,
    )


def resumed(
    client: MlflowClient, storage: optuna.storages.RDBStorage, url: str, which: str
) -> optuna.Study:
    """The study of the search ``which`` (its parent's run id, or latest)."""
    name = parent_run.find(client, which, "search").data.tags[tables.STUDY_TAG]
    study = studies.load(storage, name)
    if study is None:
        raise InputError(
            f"the study {name} is not in {studies.hidden_password(url)}: give the database it "
            "was started in with search.storage="
        )
    return study


def create(
    client: MlflowClient,
    cfg: DictConfig,
    storage: optuna.storages.RDBStorage,
    url: str,
    name: str,
    space: dict[str, str],
    task: list[str],
    per_process: list[str],
) -> tuple[optuna.Study, parent_run.Parent | None]:
    """A new study ``name`` and its parent run of the same name, this process working on it;
    (the study, the parent). If another process has just made a study of that name (both
    started with the same search.study), (that study, None): this process joins it."""
    try:
        study = new_study(storage, name, numbered=not cfg.search.study)
    except optuna.exceptions.DuplicatedStudyError:  # search.study=name, made meanwhile
        return studies.load(storage, name), None
    name = study.study_name
    overrides = [o for o in task if o not in per_process]
    record = partial(studies.record_parent, study, overrides=overrides, me=tables.launcher_id())
    try:
        experiment = tracking.experiment_id(client, cfg.tracking.experiment)
        tags = {tables.STUDY_TAG: name, STORAGE_TAG: studies.hidden_password(url)}
        argv = [studies.hidden_password(o) for o in task]
        swept = dimensions.swept(space)
        parent = parent_run.create(
            client, experiment, name, argv, swept, space, tags=tags, record=record
        )
    except BaseException:
        optuna.delete_study(study_name=name, storage=storage)
        raise
    return study, parent


def new_study(storage: optuna.storages.RDBStorage, name: str, numbered: bool) -> optuna.Study:
    """A new study that maximises, named ``name``; if ``numbered`` and that name is taken (two
    searches started in the same second), the first free of ``name-2``, ``name-3``, ..."""
    for number in itertools.count(1):
        candidate = name if number == 1 else f"{name}-{number}"
        try:
            return optuna.create_study(storage=storage, study_name=candidate, direction="maximize")
        except optuna.exceptions.DuplicatedStudyError:
            if not numbered:
                raise


def per_process_overrides(task: list[str]) -> list[str]:
    """The overrides that are this process's own, not the study's: how many trials it adds
    and how (``search.*`` but its space), and where it tracks them (``tracking``, the same
    store however it is reached); a process joining or resuming a study may change them."""
    parsed = OverridesParser.create().parse_overrides(task)
    return [
        o.input_line
        for o in parsed
        if o.key_or_group.split(".")[0] in ("search", "tracking")
        and not o.key_or_group.startswith("search.space")  # the study's, as its trials
    ]


def parent_run_id(study: optuna.Study) -> str:
    """The run id of the study's parent, waited for while the study's creator makes it (the
    last thing it records on the study)."""
    deadline = time.monotonic() + JOIN_SECONDS
    while (run_id := study.user_attrs.get(studies.PARENT_ATTR)) is None:
        if time.monotonic() > deadline:
            raise InputError(
                f"the study {study.study_name} has no parent run: the process that made it "
                "stopped first; start another study"
            )
        time.sleep(0.5)
    return run_id


def join_study(client: MlflowClient, study: optuna.Study, run_id: str) -> parent_run.Parent:
    """The study's parent ``run_id``, this process working on it (``parent_run.join``): with no
    other process working on it, reopened, the trials it left RUNNING ended FAIL."""
    # registered first: no other process reopens the parent under our feet
    others = studies.start_working(study, tables.launcher_id())
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError(
            f"the study's parent run {run_id} is not in {client.tracking_uri}: use the store it "
            "was started with (tracking.uri=)"
        ) from None
    fail_left_running = partial(studies.fail_running_trials, study)
    return parent_run.join(client, run, others, on_reopen=fail_left_running)


def end_search(launch: Launch, status: str, seconds: float) -> None:
    """This process's part of the search ends (``studies.stop_working``); the parent ends
    ``status`` with the last process on the study (``parent_run.finish``)."""
    study = launched_study(launch)
    others = studies.stop_working(study, launch.launcher)
    parent_run.finish(launch.parent, status, seconds, others)
    print(studies.study_line(study, launch.storage), flush=True)


def abandon_search(launch: Launch, why: str, run_id: str | None = None) -> None:
    """In a worker whose launcher died (kill -9): the launcher's part of the search ends
    (``studies.stop_working``), and of its runs this worker's in flight, ``run_id`` (the
    other workers end theirs); the parent ends KILLED unless another process works on the
    study (``parent_run.abandon``)."""
    others = studies.stop_working(launched_study(launch), launch.launcher)
    parent_run.abandon(launch.parent, why, run_id, others)


def launched_study(launch: Launch) -> optuna.Study:
    return studies.load(studies.open_storage(launch.storage), launch.study)


@entry.point(config.error_line, tracking.full_disk_error_line)
def main(argv: list[str] | None = None) -> int:
    """The search of the command line ``argv``; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--resume",
        metavar="PARENT_RUN_ID",
        help="add trials to this search's study and parent run (or: latest)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. search.n_trials=20")
    args = parser.parse_intermixed_args(argv)  # overrides on both sides of --resume
    stopping.catch_stops()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what it does
    launch = prepare(args.overrides, args.resume)
    print(
        f"search {launch.study}: {launch.n_trials} trials in {launch.workers} workers over "
        f"{dimensions.swept(launch.space)}; {launch.n_before} trials before; parent run "
        f"{launch.parent.run_id}",
        flush=True,
    )
    body, end = partial(run_workers, launch), partial(end_search, launch)
    wait = partial(parent_run.wait_for_running_jobs, launch.parent)
    failure = partial(parent_run.failure_line, launch.parent, "search")
    return stopping.run_to_end(body, end, wait, failure)


if __name__ == "__main__":
    # Run the importable module's copy: joblib pickles the worker function by reference to
    # pipeline.search then, not by value from __main__, which a worker cannot import.
    from pipeline.search import main as importable_main

    sys.exit(entry.run(importable_main))
