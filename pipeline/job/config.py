"""The structured-config schema (registered in Hydra's ConfigStore) and the checks on its values.

The dataclasses below are the one place where every key's type and default value live;
the options in ``conf/`` say only what differs from them. Hydra types every key from
this schema when it composes ``conf/``; ``validate`` then checks the ranges, before any
data is loaded or any MLflow run is created.
"""

import copy
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.job.data import (
    DATASETS,
    SYNTHETIC,
    WITH_N_FEATURES,
    n_classes_of,
    n_informative,
    n_samples_of,
    shape_of,
    split_sizes,
)
from pipeline.nn.activations import HIDDEN_ACTIVATIONS
from pipeline.nn.initialization import DTYPES, INIT_SCALES

CONF = Path(__file__).resolve().parents[2] / "conf"  # the config groups, composed by Hydra
SEEDS = 2**32  # NumPy's seeds (and scikit-learn's random_state) are 0 .. 2**32 - 1


@dataclass
class DatasetConfig:
    name: str = "moons"
    n_samples: int = 1000  # synthetic sets only (the bundled ones have a fixed size)
    noise: float = 0.2  # synthetic sets only: moons and circles' noise, blobs' cluster std,
    # classification's fraction of flipped labels
    n_features: int = 2  # blobs and classification only
    n_classes: int = 2  # blobs and classification only
    test_size: float = 0.25
    val_size: float = 0.2  # the fraction of the non-test part held out for validation; 0: none


@dataclass
class ModelConfig:
    depth: int = 2  # hidden layers; 0 is logistic regression
    width: int = 16  # units per hidden layer
    activation: str = "relu"  # relu, leaky_relu, tanh, sigmoid
    init: str = "he"  # he, xavier, small (x0.01)


@dataclass
class TrainConfig:
    learning_rate: float = 0.1
    iterations: int = 2000
    log_every: int = 20  # 100 points of train_cost and val_cost
    dtype: str = "float64"  # float32 is about twice as fast
    blas_threads: int = 1  # one BLAS thread per job, one job per core
    patience: int = 0  # early stopping: logged points without a val_cost improvement; 0: off
    min_delta: float = 0.0  # the least decrease of val_cost that counts as an improvement


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db
    experiment: str = "${dataset.name}"
    flush_seconds: float = 2.0  # a training job's points reach the store at most this often
    # each layer's gradient and weight norms at every logged point, and dynamics.png: off,
    # since they add a quarter to a default job (benchmarks/bench_dynamics.py)
    dynamics: bool = False


PRUNERS = ("median", "hyperband", "none")  # search.pruner: see pipeline/sweeps/studies.py


@dataclass
class SearchConfig:
    """``make search``: Optuna's TPE sampler over ``space``, maximising validation accuracy.
    None of it changes a job's result: it is left out of a job's digest and params."""

    # key -> a dimension in Hydra's sweep syntax: range(0, 5), choice(relu, tanh) or
    # interval(0.001, 3.0), tag(log, ...) for a log scale, int(interval(...)) for integers
    space: dict[str, str] = field(default_factory=dict)
    n_trials: int = 30  # trials this process adds to the study (make search N=)
    workers: int = 2  # processes on this machine, each running one trial at a time
    pruner: str = "median"  # median, hyperband or none (PRUNERS)
    startup_trials: int = 3  # the median pruner prunes once this many trials have finished
    study: str | None = None  # a study to create or join; None: a new one, the parent's name
    storage: str | None = None  # the study's database URL; None: optuna.db beside the store


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 0  # seeds the data, the split and the initialisation
    sweep_name: str = "sweep"  # the prefix of a sweep's parent run name


# Keys added to the schema after configs were first recorded, each with the value that means
# the behaviour from before it existed: a recorded config.yaml that lacks one reproduces with it.
ADDED_LATER: dict[str, Any] = {
    "dataset.val_size": 0.0,  # no validation part: train and test, curves of both
    "train.patience": 0,  # no early stopping
    "train.min_delta": 0.0,
    "tracking.flush_seconds": math.inf,  # every point sent when the job ends
    "tracking.dynamics": False,  # the cost curves alone
    # a search's settings change no job: today's defaults
    **{f"search.{key}": value for key, value in asdict(SearchConfig()).items() if key != "space"},
}


def register() -> None:
    """Put the schema in Hydra's ConfigStore as ``config_schema``, for conf/config.yaml."""
    ConfigStore.instance().store(name="config_schema", node=Config)


# What cannot change a job's result: where it is tracked, the sweep or search it is part of.
NOT_IN_DIGEST = ("tracking", "sweep_name", "search", "hydra")


def config_digest(cfg: DictConfig) -> str:
    """A stable hash of the job's fully resolved config, leaving out NOT_IN_DIGEST: equal
    digests mean equal curves, bit for bit (train.dtype and train.blas_threads count)."""
    kept = {key: _resolved(cfg[key]) for key in cfg if key not in NOT_IN_DIGEST}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolved(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class ConfigError(ValueError):
    """A config value out of range; the message names the key and the value."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        super().__init__(f"{key}={value!r} is invalid: {rule}")


# Lines of Hydra's messages that only repeat the key or point at a stack trace.
HYDRA_NOISE = ("full_key:", "reference_type=", "object_type=", "Set the environment variable")


# Hydra's launcher plugins that come with one of our optional extras (pyproject.toml): the
# plugin's config -> the extra. conf/hydra/launcher/ray_cluster.yaml extends `ray`, slurm.yaml
# extends `submitit_slurm`.
LAUNCHER_EXTRAS = {"ray": "ray", "submitit_local": "cluster", "submitit_slurm": "cluster"}


def error_line(error: Exception) -> str:
    """One line that names the key and the value, for a ConfigError or for Hydra's and
    OmegaConf's several-line errors (unknown key or option, wrong type, bad syntax)."""
    group, _, option = str(getattr(error, "missing_cfg_file", "")).rpartition("/")
    if group == "hydra/launcher" and option in LAUNCHER_EXTRAS:
        extra = LAUNCHER_EXTRAS[option]
        return f"hydra/launcher={option} is not installed: pip install -e '.[{extra}]'"
    if isinstance(error, MissingConfigException) and error.options:
        return f"{group}={option} is invalid: known options: {', '.join(error.options)}"
    if isinstance(error, OverrideParseException):
        return f"{error.override} is invalid: {error.message.splitlines()[0]}"
    # Hydra wraps OmegaConf's error, which knows the key, as the cause.
    source = error if isinstance(error, OmegaConfBaseException) else error.__cause__
    if isinstance(source, OmegaConfBaseException) and getattr(source, "full_key", None):
        reason = str(source.msg).splitlines()[0]
        if source.value is None:  # an unknown key
            return f"{source.full_key} is not a config key: {reason}"
        return str(ConfigError(source.full_key, source.value, reason))
    lines = (line.strip() for line in str(error).splitlines())
    return "; ".join(line for line in lines if line and not line.startswith(HYDRA_NOISE))


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(key, value, rule)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value out of range."""
    d, m, t = cfg.dataset, cfg.model, cfg.train
    _check(d.name in DATASETS, "dataset.name", d.name, f"known data sets: {', '.join(DATASETS)}")
    _check(m.depth >= 0, "model.depth", m.depth, "must be >= 0")
    _check(m.width >= 1, "model.width", m.width, "must be >= 1")
    _check(
        m.activation in HIDDEN_ACTIVATIONS,
        "model.activation",
        m.activation,
        f"one of {', '.join(HIDDEN_ACTIVATIONS)}",
    )
    _check(m.init in INIT_SCALES, "model.init", m.init, f"one of {', '.join(INIT_SCALES)}")
    _check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "must be > 0")
    _check(t.iterations >= 1, "train.iterations", t.iterations, "must be >= 1")
    _check(
        1 <= t.log_every <= t.iterations,
        "train.log_every",
        t.log_every,
        f"must be between 1 and train.iterations={t.iterations}",
    )
    _check(t.dtype in DTYPES, "train.dtype", t.dtype, f"one of {', '.join(DTYPES)}")
    _check(t.blas_threads >= 1, "train.blas_threads", t.blas_threads, "must be >= 1")
    _check(0 <= cfg.seed < SEEDS, "seed", cfg.seed, f"must be between 0 and {SEEDS - 1}")
    _check(0 < d.test_size < 1, "dataset.test_size", d.test_size, "must be between 0 and 1")
    _check(0 <= d.val_size < 1, "dataset.val_size", d.val_size, "must be >= 0 and < 1")
    _check(t.patience >= 0, "train.patience", t.patience, "must be >= 0 (0: no early stopping)")
    _check(
        t.patience == 0 or d.val_size > 0,
        "train.patience",
        t.patience,
        "early stopping watches val_cost: set dataset.val_size > 0",
    )
    _check(t.min_delta >= 0, "train.min_delta", t.min_delta, "must be >= 0")
    _check(
        cfg.tracking.flush_seconds > 0,
        "tracking.flush_seconds",
        cfg.tracking.flush_seconds,
        "must be > 0",
    )
    check_search(cfg.search)
    _check(d.noise >= 0, "dataset.noise", d.noise, "must be >= 0")
    _check(d.n_features >= 2, "dataset.n_features", d.n_features, "must be >= 2")
    _check(d.n_classes >= 2, "dataset.n_classes", d.n_classes, "must be >= 2")
    if d.name == "classification":
        most = 2 ** n_informative(d.n_features)
        _check(
            d.n_classes <= most,
            "dataset.n_classes",
            d.n_classes,
            f"classification makes at most {most} classes from n_features={d.n_features}: "
            "raise dataset.n_features",
        )
    # A stratified split needs at least one sample of each class in every part.
    k = n_classes_of(d)
    sizes = split_sizes(n_samples_of(d), d.test_size, d.val_size)
    parts = [size for size in sizes if size]  # no validation part when val_size is 0
    key = "dataset.n_samples" if d.name in SYNTHETIC else "dataset.test_size"
    if d.name not in SYNTHETIC and d.val_size > 0:
        key = "dataset.val_size"  # a bundled set's size is fixed: the fractions are too large
    _check(
        min(parts) >= k,
        key,
        d.get(key.removeprefix("dataset.")),
        f"too few for {k} classes in each part: {sizes[0]} train, {sizes[1]} validation, "
        f"{sizes[2]} test (test_size={d.test_size}, val_size={d.val_size})",
    )
    check_memory(cfg)


def check_trial(cfg: DictConfig) -> None:
    """What a search's trial needs beyond ``validate``: a validation part to choose on."""
    _check(
        cfg.dataset.val_size > 0,
        "dataset.val_size",
        cfg.dataset.val_size,
        "a search chooses on validation: must be > 0",
    )


def check_search(s: DictConfig) -> None:
    """The search's own settings (its space is checked by pipeline.search, at its corners)."""
    _check(s.n_trials >= 1, "search.n_trials", s.n_trials, "must be >= 1")
    _check(s.workers >= 1, "search.workers", s.workers, "must be >= 1")
    _check(s.pruner in PRUNERS, "search.pruner", s.pruner, f"one of {', '.join(PRUNERS)}")
    _check(s.startup_trials >= 0, "search.startup_trials", s.startup_trials, "must be >= 0")


def training_bytes(cfg: DictConfig) -> int:
    """About how many bytes training ``cfg`` holds at once: the parameters and their
    gradients, the training set's activations (forward caches) and their gradients
    (backward buffers), and the test set's activations (test_cost)."""
    d, m = cfg.dataset, cfg.model
    n, n_x = shape_of(d)
    k = n_classes_of(d)
    n_parameters, n_units = network_size(n_x, m.depth, m.width, 1 if k == 2 else k)
    n_test = math.ceil(d.test_size * n)
    values = 2 * n_parameters + 2 * n_units * (n - n_test) + n_units * n_test
    return values * (8 if cfg.train.dtype == "float64" else 4)


def network_size(n_x: int, depth: int, width: int, n_y: int) -> tuple[int, int]:
    """(parameters, units over all layers) of the network ``layer_dims(n_x, depth, width,
    n_y)``, counted without listing its layers: a depth of 10^8 must be refused at once."""
    if depth == 0:
        return n_y * (n_x + 1), n_x + n_y
    hidden = width * (n_x + 1) + (depth - 1) * width * (width + 1)
    return hidden + n_y * (width + 1), n_x + depth * width + n_y


def machine_memory() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(cfg: DictConfig) -> None:
    """ConfigError, with the estimate, if training ``cfg`` would not fit in the machine's
    memory; it names the first of width, depth, number of examples or of features whose
    schema default would make it fit (the width if none would)."""
    needed, memory = training_bytes(cfg), machine_memory()
    if needed <= memory:
        return
    d, m = cfg.dataset, cfg.model
    candidates = {"model.width": ModelConfig.width, "model.depth": ModelConfig.depth}
    if d.name in SYNTHETIC:
        candidates["dataset.n_samples"] = DatasetConfig.n_samples
    if d.name in WITH_N_FEATURES:
        candidates["dataset.n_features"] = DatasetConfig.n_features
    key = next((k for k, v in candidates.items() if fits_with(cfg, k, v, memory)), "model.width")
    n, n_x = shape_of(d)
    raise ConfigError(
        key,
        OmegaConf.select(cfg, key),
        f"about {needed / 2**30:,.0f} GiB of parameters, activations and their gradients for "
        f"{m.depth} hidden layers of {m.width} units on {n} examples of {n_x} features in "
        f"{cfg.train.dtype}, more than the {memory / 2**30:.0f} GiB this machine has",
    )


def fits_with(cfg: DictConfig, key: str, value: Any, memory: int) -> bool:
    """Whether ``cfg`` with ``key`` lowered to ``value`` would fit in ``memory`` bytes."""
    if OmegaConf.select(cfg, key) <= value:
        return False  # not lowered: not the reason
    lowered = copy.deepcopy(cfg)
    OmegaConf.update(lowered, key, value, merge=False)
    return training_bytes(lowered) <= memory
