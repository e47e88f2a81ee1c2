"""Which swept hyperparameter mattered: each one's importance for the validation accuracy,
and the validation accuracy against its values (marginals) and against each pair's.

The importance is Optuna's, computed on a study built from the sweep's finished runs
(``optuna.trial.create_trial``, ``study.add_trials``): a grid sweep's as well as a search's.
The evaluator is named, never Optuna's default (PED-ANOVA since Optuna 5, fANOVA before):
**fANOVA** (``FanovaImportanceEvaluator``), the share of the validation accuracy's variance
that each hyperparameter explains on its own, which is the question "which knob mattered".
PED-ANOVA instead asks which values reach the top 10% of the runs, and wants at least five
runs there (50 runs): more than a default 27-run sweep has. fANOVA's forest fits from a few
runs; below MIN_RUNS finished runs nothing is ranked. Its forest is seeded with the jobs'
``seed`` and the trials are added in one order (sorted by their values), so that the same
sweep run twice gives the same importances, bit for bit.
"""

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import optuna
import pandas as pd
from mlflow.entities import Run
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from pipeline.job import config

TARGET = "val_accuracy"  # what importance is measured against: validation, never test
EVALUATOR = "fANOVA"
MIN_RUNS = 4  # finished runs below which nothing is ranked
N_TREES = 64  # fANOVA's forest (Optuna's default)
MAX_DEPTH = 6  # its trees' (Optuna: 64): the cost grows with their leaves, here at most 64
LOG_SPAN = 10.0  # a grid's positive values spanning this factor or more: a log scale
MAX_BINS = 6  # a hyperparameter with more values than this (a search's): binned for plots
FILE = "importance.json"
METRIC_PREFIX = "importance/"
FIRST_PAIR = ("model.depth", "train.learning_rate")  # the pair a learner looks at first
# a job's params computed from its config (pipeline.job.run): they vary with the swept keys
DERIVED = {"layer_dims", "n_parameters", "n_train", "n_val", "n_test"}


@dataclass
class Importance:
    """What a sweep's importance says: the evaluator, the target, each swept
    hyperparameter's importance (summing to 1, largest first), and one line for people."""

    evaluator: str | None  # None: nothing was ranked
    target: str
    importances: dict[str, float]
    runs: int  # finished runs with a validation accuracy
    seed: int | None
    line: str
    log_scale: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def metrics(self) -> dict[str, float]:
        """One metric per hyperparameter, ``importance/<key>``."""
        return {f"{METRIC_PREFIX}{key}": value for key, value in self.importances.items()}


@dataclass
class Swept:
    """A swept hyperparameter: its key, its values in each run, and how they are measured."""

    key: str
    values: pd.Series  # one per finished run, numbers where they are numbers
    distribution: BaseDistribution

    @property
    def numeric(self) -> bool:
        return not isinstance(self.distribution, CategoricalDistribution)

    @property
    def log(self) -> bool:
        return self.numeric and self.distribution.log


def finished_runs(runs: list[Run]) -> list[Run]:
    """The runs that finished with a finite validation accuracy, in a fixed order (their
    params): the study sees them in the same order whichever order the store returned."""
    kept = [
        r
        for r in runs
        if r.info.status == "FINISHED" and math.isfinite(r.data.metrics.get(TARGET, math.nan))
    ]
    return sorted(kept, key=lambda r: sorted(r.data.params.items()))


def swept_keys(runs: list[Run]) -> list[str]:
    """The hyperparameters (params) that take more than one value over ``runs``, but those
    computed from others (DERIVED) and the settings that change no result
    (``config.NOT_IN_DIGEST``)."""
    values: dict[str, set] = {}
    for run in runs:
        for key, value in run.data.params.items():
            values.setdefault(key, set()).add(value)
    return sorted(
        key
        for key, seen in values.items()
        if len(seen) > 1 and key not in DERIVED and key.split(".")[0] not in config.NOT_IN_DIGEST
    )


def swept(runs: list[Run], space: dict[str, str] | None = None) -> list[Swept]:
    """Each swept hyperparameter of the finished ``runs`` with its distribution: numbers as
    numbers, on a log scale where the sweep's are (a search's ``tag(log, ...)`` in ``space``;
    a grid's positive values spanning LOG_SPAN or more)."""
    space = space or {}
    knobs = []
    for key in swept_keys(runs):
        values = as_numbers(pd.Series([r.data.params.get(key, "None") for r in runs]))
        if values.nunique() > 1:
            knobs.append(Swept(key, values, distribution(values, "log" in space.get(key, ""))))
    return knobs


def as_numbers(texts: pd.Series) -> pd.Series:
    """The params ``texts`` as integers or floats where they all spell one, else as they are."""
    numbers = pd.to_numeric(texts, errors="coerce")
    if numbers.isna().any():
        return texts
    integers = not any("." in t or "e" in t.lower() for t in texts)
    return numbers.astype(int) if integers else numbers.astype(float)


def distribution(values: pd.Series, tagged_log: bool) -> BaseDistribution:
    """An integer, float or categorical distribution over ``values``."""
    if not pd.api.types.is_numeric_dtype(values):
        return CategoricalDistribution(sorted(values.unique()))
    low, high = values.min().item(), values.max().item()
    log = low > 0 and (tagged_log or high / low >= LOG_SPAN)
    if values.dtype.kind == "i":
        return IntDistribution(low, high, log=log)
    return FloatDistribution(low, high, log=log)


def compute(runs: list[Run], space: dict[str, str] | None = None) -> Importance:
    """The importance of each hyperparameter swept over ``runs`` (a sweep's latest attempts)
    for the validation accuracy; ``space``: a search's dimensions, as its parent records
    them. With too little to rank, no importances and a line saying why."""
    finished = finished_runs(runs)
    knobs = swept(finished, space)
    seed = jobs_seed(finished)
    nothing = nothing_to_rank(runs, finished, knobs)
    if nothing:
        return Importance(None, TARGET, {}, len(finished), seed, f"Nothing to rank: {nothing}.")
    evaluator = optuna.importance.FanovaImportanceEvaluator(
        n_trees=N_TREES, max_depth=MAX_DEPTH, seed=seed
    )
    with quiet_optuna():
        study = study_of(finished, knobs)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    importances = {key: round(float(value), 6) for key, value in found.items()}
    top, share = next(iter(importances.items()))
    line = (
        f"Mattered most: **{top}** ({EVALUATOR} importance {share:.2f} for the validation "
        f"accuracy, over {len(finished)} runs)."
    )
    log_scale = [k.key for k in knobs if k.log]
    return Importance(EVALUATOR, TARGET, importances, len(finished), seed, line, log_scale)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's info lines (a new study) and warnings (experimental features) held back: the
    importance's own line says what was done."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def nothing_to_rank(runs: list[Run], finished: list[Run], knobs: list[Swept]) -> str | None:
    """Why the importance cannot rank anything, or None."""
    if not runs:
        return "the sweep has no runs"
    if not finished:
        no_validation = all(r.data.params.get("n_val") == "0" for r in runs)
        return (
            "no run has a validation part (val_size=0)"
            if no_validation
            else "no run finished with a validation accuracy"
        )
    if len(finished) < MIN_RUNS:
        return f"{len(finished)} finished runs, importance needs at least {MIN_RUNS}"
    if not knobs:
        return "no hyperparameter takes more than one value over the finished runs"
    if len(knobs) == 1:
        return f"only {knobs[0].key} was swept, so all that varied is down to it"
    if len({r.data.metrics[TARGET] for r in finished}) == 1:
        return "every run has the same validation accuracy"
    return None


def jobs_seed(runs: list[Run]) -> int:
    """The jobs' config seed (the smallest, if it was swept): fANOVA's forest's seed."""
    seeds = [int(r.data.params["seed"]) for r in runs if "seed" in r.data.params]
    return min(seeds, default=0)


def study_of(runs: list[Run], knobs: list[Swept]) -> optuna.Study:
    """An in-memory study of one complete trial per run: its swept values, its validation
    accuracy."""
    distributions = {k.key: k.distribution for k in knobs}
    trials = [
        optuna.trial.create_trial(
            params={k.key: plain(k.values.iloc[i]) for k in knobs},
            distributions=distributions,
            value=run.data.metrics[TARGET],
        )
        for i, run in enumerate(runs)
    ]
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    return study


def plain(value):
    """A numpy scalar as Python's int or float, which Optuna's distributions check."""
    return value.item() if isinstance(value, np.generic) else value


# -- marginals and pairs ---------------------------------------------------------------------


def accuracy_frame(runs: list[Run], space: dict[str, str] | None = None):
    """(a frame of one row per finished run: each swept hyperparameter's value, binned where
    it has more than MAX_BINS values, and its validation accuracy; the swept
    hyperparameters)."""
    finished = finished_runs(runs)
    knobs = swept(finished, space)
    frame = pd.DataFrame({k.key: binned(k) for k in knobs})
    frame[TARGET] = [r.data.metrics[TARGET] for r in finished]
    return frame, knobs


def binned(knob: Swept) -> pd.Series:
    """The knob's values, or for a numeric one with more than MAX_BINS values (a search's)
    the middle of its bin (MAX_BINS bins, log-spaced on a log scale)."""
    values = knob.values
    if not knob.numeric or values.nunique() <= MAX_BINS:
        return values
    numbers = values.astype(float)
    space = np.geomspace if knob.log else np.linspace
    edges = space(numbers.min(), numbers.max(), MAX_BINS + 1)
    middles = np.sqrt(edges[:-1] * edges[1:]) if knob.log else (edges[:-1] + edges[1:]) / 2
    index = np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, MAX_BINS - 1)
    return pd.Series(middles[index].round(6 if not knob.log else 12))


def marginals(frame: pd.DataFrame, knobs: list[Swept]) -> dict[str, pd.DataFrame]:
    """key -> its values with the validation accuracy's mean, min and max over the other
    knobs (over every run at that value)."""
    return {
        k.key: frame.groupby(k.key)[TARGET].agg(["mean", "min", "max"]).sort_index() for k in knobs
    }


def pairs(frame: pd.DataFrame, knobs: list[Swept]) -> list[tuple[str, str, pd.DataFrame]]:
    """(row key, column key, mean validation accuracy over their values) of each pair of
    knobs, depth x learning rate first."""
    keys = [k.key for k in knobs]
    found = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    found.sort(key=lambda pair: set(pair) != set(FIRST_PAIR))
    return [
        (a, b, frame.pivot_table(index=a, columns=b, values=TARGET, aggfunc="mean"))
        for a, b in found
    ]
