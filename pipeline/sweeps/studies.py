"""A search's Optuna study: its storage beside the tracking store, its pruner, its trials'
sampler seeds, and the processes working on it, recorded in the study's user attributes."""

import contextlib
import sqlite3
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from pipeline.processes.errors import InputError, first_line
from pipeline.store import tables, tracking
from pipeline.store.auth import hidden_password  # also studies.hidden_password

PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attrs: its parent run,
OVERRIDES_ATTR = "overrides"  # the command line's overrides its trials are composed with,
LAUNCHER_ATTR = "launcher "  # and, per process working on it (host:pid), running or done
RUN_ATTR = "mlflow_run_id"  # a trial's user attrs: its run,
PROCESS_ATTR = "launcher"  # and the process (host:pid) that runs it
HEARTBEAT_SECONDS = 10  # a trial whose process died ends FAIL after twice this, at the next trial


def storage_url(configured: str | None, tracking_uri: str) -> str:
    """``search.storage`` if set, else ``optuna.db`` beside a SQLite store (a file of its own:
    MLflow's database is MLflow's), else in ``mlruns/``."""
    if configured:
        return configured
    store = tracking.DEFAULT_STORE / "mlflow.db"
    if tracking_uri.startswith(tracking.SQLITE):
        store = Path(tracking_uri.removeprefix(tracking.SQLITE))
    return tracking.SQLITE + str(store.resolve().parent / "optuna.db")


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on the database ``url``, its tables made if new; trials whose process
    stops beating (killed) end FAIL. InputError, naming it, if it cannot be used."""
    try:
        options = {}
        if url.startswith(tracking.SQLITE):
            database = Path(url.removeprefix(tracking.SQLITE))
            database.parent.mkdir(parents=True, exist_ok=True)  # a file in the way: OSError
            options = {"creator": partial(sqlite_connection, database)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=options, heartbeat_interval=HEARTBEAT_SECONDS
            )
    except Exception as error:  # SQLAlchemy's or the driver's: any means unusable
        raise InputError(
            f"the study storage {hidden_password(url)} cannot be used ({first_line(error)}): "
            "give another database URL with search.storage="
        ) from None


def sqlite_connection(database: Path) -> sqlite3.Connection:
    """A connection to the study's SQLite database in write-ahead-log mode, synced at its
    checkpoints only: a trial reports at every logged point, and a commit synced to disk
    each time costs more than the report (~20 ms against ~5 on a busy disk). A crash of the
    process loses nothing; a power cut may lose the last reports. Writers take turns."""
    connection = sqlite3.connect(database, timeout=60, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def load(storage: optuna.storages.RDBStorage, name: str, **kwargs) -> optuna.Study | None:
    """The study ``name`` in ``storage``, or None if there is none."""
    try:
        return optuna.load_study(study_name=name, storage=storage, **kwargs)
    except KeyError:
        return None


def pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner ``search.pruner`` names, set for curves logged every train.log_every
    iterations up to train.iterations (a step is an iteration)."""
    iterations = cfg.train.iterations
    if cfg.search.pruner == "median":  # below the median of earlier trials at the same point
        # past the first fortieth: on digits, how trials rank there foretells their final
        # accuracy nearly as well as later (rank correlation 0.79 at 1/100 of the
        # iterations, 0.85 at 3/100, 0.89 from 1/10 on: benchmarks/README.md)
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.search.startup_trials, n_warmup_steps=iterations // 40
        )
    if cfg.search.pruner == "hyperband":  # successive halving from 1/20 of the iterations on
        least = max(cfg.train.log_every, iterations // 20)
        return optuna.pruners.HyperbandPruner(least, iterations, reduction_factor=3)
    return optuna.pruners.NopPruner()


def sampler_seed(seed: int, trial_number: int) -> int:
    """A trial's sampler seed: from the config's and the trial's number, so the same whichever
    worker or process on the study runs it; a resumed study's trials are new numbers."""
    return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler, its random state seeded per trial (``sampler_seed``): a trial
    proposes the same values whichever worker or process runs it (seeds of a process's id
    would draw other trials each time), and no two trials share their draws. Constant liar:
    a trial still running counts as a poor one, so that workers sampling at the same time do
    not all propose the same region."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.by_trial: dict[int, optuna.samplers.TPESampler] = {}

    def of(self, trial: FrozenTrial) -> optuna.samplers.TPESampler:
        if trial.number not in self.by_trial:
            seed = sampler_seed(self.seed, trial.number)
            self.by_trial[trial.number] = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        return self.by_trial[trial.number]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self.of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, space: dict) -> dict:
        return self.of(trial).sample_relative(study, trial, space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: BaseDistribution
    ) -> object:
        return self.of(trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.of(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.of(trial).after_trial(study, trial, state, values)
        del self.by_trial[trial.number]  # the trial's draws are done


def others_working(study: optuna.Study, me: str) -> list[str]:
    """The other processes registered as working on the study (host:pid), but those of this
    host that are gone (killed); a process on another host is taken at its word."""
    others = []
    for key, state in study.user_attrs.items():
        who = key.removeprefix(LAUNCHER_ATTR)
        if not key.startswith(LAUNCHER_ATTR) or state != "running" or who == me:
            continue
        if tables.process_alive(who) is not False:  # on another host: taken at its word
            others.append(who)
    return others


def start_working(study: optuna.Study, me: str) -> list[str]:
    """This process (``me``, host:pid) registered as working on the study; the others."""
    study.set_user_attr(LAUNCHER_ATTR + me, "running")
    return others_working(study, me)


def stop_working(study: optuna.Study, me: str) -> list[str]:
    """This process's part of the study ends: it is marked done, and its trials still RUNNING
    end FAIL (its workers were stopped); the other processes still working on it."""
    study.set_user_attr(LAUNCHER_ATTR + me, "done")
    fail_running_trials(study, me)
    return others_working(study, me)


def record_parent(study: optuna.Study, run_id: str, overrides: list[str], me: str) -> None:
    """On a new study: this process working on it, the ``overrides`` its trials are composed
    with, and last its parent run ``run_id``, what a process joining it waits for."""
    start_working(study, me)
    study.set_user_attr(OVERRIDES_ATTR, overrides)
    study.set_user_attr(PARENT_ATTR, run_id)


def fail_running_trials(study: optuna.Study, process: str | None = None) -> None:
    """The study's trials still RUNNING end FAIL: only those of ``process`` (host:pid), if
    given. A trial that another worker has told meanwhile is left as it is."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if process is None or trial.user_attrs.get(PROCESS_ATTR) == process:
            with contextlib.suppress(ValueError, RuntimeError):
                study.tell(trial.number, state=TrialState.FAIL)


def study_line(study: optuna.Study, url: str) -> str:
    """e.g. ``study search-20261130-2100 (sqlite:///.../optuna.db): 30 trials, 21 complete,
    8 pruned, 1 fail; best trial 17: 0.9861``."""
    trials = study.get_trials(deepcopy=False)
    counts = {}
    for trial in trials:
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    line = f"study {study.study_name} ({hidden_password(url)}): {len(trials)} trials"
    line += "".join(f", {n} {state}" for state, n in counts.items())
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.value)
        line += f"; best trial {best.number}: {best.value:.4f}"
    return line
