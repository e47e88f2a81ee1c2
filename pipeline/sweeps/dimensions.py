"""A search's space: dimensions in Hydra's sweep syntax (``conf/sweep/search.yaml``, the
command line) as Optuna's distributions, checked at their corners, sampled for a trial."""

import itertools
from collections.abc import Mapping

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from pipeline.job import config
from pipeline.sweeps import grid


def split_space(space: Mapping[str, str], task: list[str]) -> tuple[dict[str, str], list[str]]:
    """(the space, the plain overrides) of the configured space and the command line's task
    overrides: a sweep override (``model.depth=range(1,3)``) sets or replaces a dimension, a
    plain override of a key in the space (``model.depth=2``) fixes it."""
    space = dict(space)
    plain = []
    for override in OverridesParser.create().parse_overrides(task):
        key = override.key_or_group
        if override.is_sweep_override():
            space[key] = override.input_line.partition("=")[2]
        else:
            space.pop(key, None)
            plain.append(override.input_line)
    return space, plain


def distributions(space: Mapping[str, str]) -> dict[str, BaseDistribution]:
    """Optuna's distribution of each dimension; ConfigError for one that is not a sweep."""
    parse = OverridesParser.create().parse_override
    return {key: distribution(parse(f"{key}={text}")) for key, text in space.items()}


def distribution(override) -> BaseDistribution:
    """``range`` of integers: integers between its ends (step kept); ``choice``, a shuffled or
    float ``range``: its values; ``interval``: floats, or integers with ``int(...)``; tag
    ``log``: a log scale."""
    key, value = override.key_or_group, override.value()
    text = override.input_line.partition("=")[2]
    if key.split(".")[0] in config.NOT_IN_DIGEST:
        raise config.ConfigError(key, text, "changes no trial's result: not a dimension")
    try:
        if isinstance(value, ChoiceSweep):
            return CategoricalDistribution(list(override.sweep_iterator()))
        if isinstance(value, RangeSweep):
            values = list(override.sweep_iterator())
            if value.shuffle or not all(isinstance(v, int) for v in values):
                return CategoricalDistribution(values)
            log = "log" in value.tags  # Optuna refuses a step other than 1 with it
            return IntDistribution(values[0], values[-1], step=value.step, log=log)
        if isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log)
            return FloatDistribution(value.start, value.end, log=log)
    except (ValueError, IndexError) as error:  # Optuna's check of the ends, an empty range
        raise config.ConfigError(key, text, str(error)) from None
    rule = "a search's dimension is range(...), choice(...) or interval(...)"
    raise config.ConfigError(key, text, rule)


def corners(space: Mapping[str, BaseDistribution]) -> list[list[str]]:
    """Each corner of the space as overrides: both ends of every numeric dimension crossed
    with every value of every categorical one."""
    ends = {
        key: d.choices if isinstance(d, CategoricalDistribution) else (d.low, d.high)
        for key, d in space.items()
    }
    return [
        [f"{key}={value}" for key, value in zip(ends, corner, strict=True)]
        for corner in itertools.product(*ends.values())
    ]


def check_corners(config_name: str, overrides: list[str], space: dict) -> None:
    """ConfigError (or Hydra's) for the first corner of the space whose config is invalid:
    a trial's values lie between them. Needs Hydra's compose API initialised on conf/."""
    for corner in corners(space):
        cfg = grid.job_config(config_name, [*overrides, *corner])
        config.validate(cfg)
        config.check_trial(cfg)


def swept(space: Mapping[str, str]) -> str:
    """What the search varies, e.g. ``model.depth in range(0, 5) x model.width in ...``."""
    return " x ".join(f"{key} in {text}" for key, text in space.items())


def suggest(trial: optuna.Trial, key: str, d: BaseDistribution):
    """The trial's value of dimension ``key``, sampled from ``d``."""
    if isinstance(d, IntDistribution):
        return trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(key, d.low, d.high, log=d.log)
    return trial.suggest_categorical(key, d.choices)
