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
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
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
from pipeline.nn.decay import LR_DECAYS, check_lr_decay
from pipeline.nn.initialization import DTYPES, INIT_SCALES
from pipeline.nn.optimizers import DEFAULTS, OPTIMIZERS

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
    # the course's second part (pipeline/nn/): an iteration is an epoch over the training part
    optimizer: str = "gd"  # gd, momentum, rmsprop, adam
    beta: float = DEFAULTS.beta  # momentum's; the optimizers' defaults are the course's
    beta1: float = DEFAULTS.beta1  # Adam's first moment
    beta2: float = DEFAULTS.beta2  # Adam's and RMSprop's second moment
    epsilon: float = DEFAULTS.epsilon
    batch_size: int | None = None  # examples per mini-batch; None: the whole training part
    l2: float = 0.0  # L2 regularization's strength, the course's lambd; 0: none
    lr_decay: str = "none"  # none, inverse_time, exponential (pipeline/nn/decay.py)
    decay_rate: float = 1.0  # inverse_time: its rate (0 keeps alpha0); exponential: its base


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
class SweepConfig:
    """``make sweep``'s own settings: none of them changes a job's result."""

    max_jobs: int = 1000  # a larger grid is refused before any job is composed


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0  # seeds the data, the split and the initialisation
    sweep_name: str = "sweep"  # the prefix of a sweep's parent run name


OPTIMIZER_SETTINGS = ("beta", "beta1", "beta2", "epsilon", "decay_rate")

# Keys added to the schema after configs were first recorded, each with the value that means
# the behaviour from before it existed: a recorded config.yaml that lacks one reproduces with it.
ADDED_LATER: dict[str, Any] = {
    "dataset.val_size": 0.0,  # no validation part: train and test, curves of both
    "train.patience": 0,  # no early stopping
    "train.min_delta": 0.0,
    "tracking.flush_seconds": math.inf,  # every point sent when the job ends
    **(
        OPTIMIZATION_BEFORE := {
            # full-batch gradient descent, no L2, no decay; the optimizers' settings then do nothing
            "train.optimizer": "gd",
            "train.batch_size": None,
            "train.l2": 0.0,
            "train.lr_decay": "none",
            **{f"train.{key}": getattr(TrainConfig, key) for key in OPTIMIZER_SETTINGS},
        }
    ),
    "tracking.dynamics": False,  # the cost curves alone
    # a search's and a sweep's settings change no job: today's defaults
    **{f"search.{key}": value for key, value in asdict(SearchConfig()).items() if key != "space"},
    **{f"sweep.{key}": value for key, value in asdict(SweepConfig()).items()},
}


def register() -> None:
    """Put the schema in Hydra's ConfigStore as ``config_schema``, for conf/config.yaml."""
    ConfigStore.instance().store(name="config_schema", node=Config)


# A search's and a sweep's own settings: a job's parent records them, not the job.
LAUNCH_SETTINGS = ("search", "sweep")
# What cannot change a job's result: where it is tracked, the sweep or search it is part of.
NOT_IN_DIGEST = ("tracking", "sweep_name", *LAUNCH_SETTINGS, "hydra")


def config_digest(cfg: DictConfig) -> str:
    """A stable hash of the job's fully resolved config, leaving out NOT_IN_DIGEST: equal
    digests mean equal curves, bit for bit (train.dtype and train.blas_threads count).

    The optimization's keys are left out where they mean what a config meant before they
    existed (OPTIMIZATION_BEFORE): a job of a sweep started then keeps its digest, so the
    sweep resumes and skips what it finished."""
    kept = {key: _resolved(cfg[key]) for key in cfg if key not in NOT_IN_DIGEST}
    for key, before in OPTIMIZATION_BEFORE.items():
        part, _, name = key.partition(".")
        if kept.get(part, {}).get(name, before) == before:
            kept.get(part, {}).pop(name, None)
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


def error_line(error: BaseException) -> str | None:
    """One line that names the key and the value, for a ConfigError or for Hydra's and
    OmegaConf's several-line errors (unknown key or option, wrong type, bad syntax); None
    for any other error."""
    if not isinstance(error, (ConfigError, HydraException, OmegaConfBaseException)):
        return None
    group, _, option = str(getattr(error, "missing_cfg_file", "")).rpartition("/")
    if group == "hydra/launcher" and option in LAUNCHER_EXTRAS:
        extra = LAUNCHER_EXTRAS[option]
        return f"hydra/launcher={option} is not installed: pip install -e '.[{extra}]'"
    if isinstance(error, MissingConfigException) and error.options:
        return f"{group}={option} is invalid: known options: {', '.join(error.options)}"
    if isinstance(error, OverrideParseException):
        return unparsable_line(error)
    # Hydra wraps OmegaConf's error, which knows the key, as the cause.
    source = error if isinstance(error, OmegaConfBaseException) else error.__cause__
    if isinstance(source, OmegaConfBaseException) and getattr(source, "full_key", None):
        reason = str(source.msg).splitlines()[0]
        if source.value is None:  # an unknown key
            return f"{source.full_key} is not a config key: {reason}"
        return str(ConfigError(source.full_key, source.value, reason))
    lines = (line.strip() for line in str(error).splitlines())
    return "; ".join(line for line in lines if line and not line.startswith(HYDRA_NOISE))


LEXER_ERROR = "LexerNoViableAltException: "  # Hydra's prefix, then the override, a caret below


def unparsable_line(error: OverrideParseException) -> str:
    """One line for an override Hydra's grammar cannot parse: a config group's known options,
    or the character the grammar stops at."""
    override = error.override
    group = override.partition("=")[0].lstrip("+~").partition("@")[0]
    options = sorted(path.stem for path in (CONF / group).glob("*.yaml")) if group else []
    if "=" in override and options:
        return f"{override} is invalid: known options: {', '.join(options)}"
    lines = [line for line in error.message.splitlines() if not line.startswith("See http")]
    if lines[0].startswith(LEXER_ERROR) and len(lines) > 1 and "^" in lines[1]:
        column = lines[1].index("^") - len(LEXER_ERROR)
        if 0 <= column < len(override):
            return (
                f"{override} cannot be parsed: Hydra's override grammar stops at "
                f"{override[column]!r}; quote the value: key='value'"
            )
    return f"{override} cannot be parsed: {lines[-1].strip()}"


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
    _check(
        math.isfinite(t.learning_rate) and t.learning_rate > 0,
        "train.learning_rate",
        t.learning_rate,
        "must be a finite number > 0",
    )
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
    _check(
        math.isfinite(t.min_delta) and t.min_delta >= 0,
        "train.min_delta",
        t.min_delta,
        "must be a finite number >= 0",
    )
    _check(  # inf: every point sent when the job ends
        cfg.tracking.flush_seconds > 0,
        "tracking.flush_seconds",
        cfg.tracking.flush_seconds,
        "must be > 0",
    )
    check_experiment(cfg.tracking.experiment)
    check_optimization(t)
    check_search(cfg.search)
    _check(cfg.sweep.max_jobs >= 1, "sweep.max_jobs", cfg.sweep.max_jobs, "must be >= 1")
    _check(
        math.isfinite(d.noise) and d.noise >= 0,
        "dataset.noise",
        d.noise,
        "must be a finite number >= 0",
    )
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
    _check(
        t.batch_size is None or 1 <= t.batch_size <= sizes[0],
        "train.batch_size",
        t.batch_size,
        f"must be between 1 and the {sizes[0]} training examples (null: all of them)",
    )
    check_memory(cfg)


def check_experiment(name: str) -> None:
    """MLflow's own rule for an experiment's name: not empty, at most its maximum length."""
    from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH  # mlflow: a slow import

    _check(name != "", "tracking.experiment", name, "an experiment needs a name")
    _check(
        len(name) <= MAX_EXPERIMENT_NAME_LENGTH,
        "tracking.experiment",
        f"{name[:20]}...",
        f"{len(name)} characters, more than the {MAX_EXPERIMENT_NAME_LENGTH} MLflow allows",
    )


def check_optimization(t: DictConfig) -> None:
    """The optimizer, its settings, L2 and the learning rate's decay (the batch size needs
    the data set's split: ``validate`` checks it)."""
    optimizers = ", ".join(OPTIMIZERS)
    _check(t.optimizer in OPTIMIZERS, "train.optimizer", t.optimizer, f"one of {optimizers}")
    for key in ("beta", "beta1", "beta2"):
        _check(0 <= t[key] < 1, f"train.{key}", t[key], "must be >= 0 and < 1")
    _check(0 < t.epsilon < math.inf, "train.epsilon", t.epsilon, "must be a finite number > 0")
    _check(0 <= t.l2 < math.inf, "train.l2", t.l2, "must be a finite number >= 0 (0: none)")
    _check(t.lr_decay in LR_DECAYS, "train.lr_decay", t.lr_decay, f"one of {', '.join(LR_DECAYS)}")
    try:
        check_lr_decay(t.lr_decay, t.decay_rate)
    except ValueError as error:
        raise ConfigError(
            "train.decay_rate", t.decay_rate, str(error).partition("; got")[0]
        ) from None


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
