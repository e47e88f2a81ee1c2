"""Every config composes through Hydra, and every bad value is named with its key."""

import pytest
from hydra.errors import HydraException

from pipeline.config import ConfigError, error_line, validate
from tests.helpers import CONF

GROUPS = ["dataset", "model", "train", "tracking"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override", [f"{group}={name}" for group in GROUPS for name in options(group)]
)
def test_every_group_option_composes_and_validates(compose_config, override):
    cfg = compose_config(override)
    validate(cfg)
    assert set(cfg) == {"dataset", "model", "train", "tracking", "seed", "sweep_name"}


@pytest.mark.parametrize("sweep", options("sweep"))
def test_every_named_sweep_composes(compose_config, sweep):
    cfg = compose_config(f"sweep={sweep}")
    validate(cfg)
    assert cfg.sweep_name == sweep


def test_defaults(compose_config):
    cfg = compose_config()
    assert (cfg.dataset.name, cfg.model.depth, cfg.model.width) == ("moons", 2, 16)
    assert cfg.tracking.experiment == "moons"
    assert cfg.train.iterations // cfg.train.log_every >= 100


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=-1", "model.depth=-1 is invalid: must be >= 0"),
        ("model.width=0", "model.width=0 is invalid: must be >= 1"),
        ("train.learning_rate=0", "train.learning_rate=0.0 is invalid: must be > 0"),
        ("train.learning_rate=-0.5", "train.learning_rate=-0.5 is invalid: must be > 0"),
        ("train.iterations=0", "train.iterations=0 is invalid: must be >= 1"),
        ("train.log_every=0", "train.log_every=0 is invalid: must be between 1 and"),
        ("train.log_every=5000", "train.log_every=5000 is invalid: must be between 1 and"),
        ("dataset.test_size=1.0", "dataset.test_size=1.0 is invalid: must be between 0 and 1"),
        ("dataset.test_size=0", "dataset.test_size=0.0 is invalid"),
        ("dataset.name=mnist", "dataset.name='mnist' is invalid: known data sets: moons"),
        ("model.activation=gelu", "model.activation='gelu' is invalid: one of relu"),
        ("model.init=zeros", "model.init='zeros' is invalid: one of he"),
        ("train.dtype=float16", "train.dtype='float16' is invalid: one of float64, float32"),
        ("dataset.n_samples=3", "dataset.n_samples=3 is invalid: too few for 2 classes"),
    ],
)
def test_bad_values_name_key_and_value(compose_config, override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(override))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "model.depth=deep",
            "model.depth='deep' is invalid: Value 'deep' of type 'str' could not be converted"
            " to Integer",
        ),
        ("model.depht=3", "model.depht is not a config key: Key 'depht' not in 'ModelConfig'"),
        ("model=wide", "model=wide is invalid: known options: default, logistic"),
        ("seed=[1", "seed=[1 is invalid: no viable alternative at input '[1'"),
    ],
)
def test_hydra_composition_errors_become_one_line(compose_config, override, line):
    with pytest.raises(HydraException) as error:
        compose_config(override)
    assert error_line(error.value) == line
