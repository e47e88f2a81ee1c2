"""``python -m pipeline.gradcheck [overrides]``: check backpropagation's gradients.

    python -m pipeline.gradcheck model.depth=3 model.activation=tanh

Composes the config a job with these overrides would run (conf/, validated), builds its
network at initialization, and compares L_model_backward's gradients with centred
differences on a seeded batch of BATCH training examples (pipeline/nn/gradient_check.py
says how). Prints one line per layer and a verdict. Exit 0 when every layer passes, 1 when
one differs, 2 on bad input (one line ``error: ...``).
"""

import sys

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from pipeline.job import config
from pipeline.job import data as datasets
from pipeline.job.loop import layer_dims
from pipeline.nn import L_model_backward, initialize_parameters_deep
from pipeline.nn.gradient_check import (
    EPSILON,
    Backward,
    gradient_check_n,
    layer_line,
    verdict,
)
from pipeline.processes import entry
from pipeline.processes.errors import InputError

config.register()
BATCH = 64  # training examples the gradients are checked on


def compose_config(overrides: list[str]) -> DictConfig:
    """The job's config for ``overrides``, composed from conf/ and validated (ConfigError,
    InputError for a sweep's values, or Hydra's and OmegaConf's errors)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = [override.input_line for override in parsed if override.is_sweep_override()]
    if sweeps:
        raise InputError(
            f"{sweeps[0]} is a sweep: the gradient check is of one network, give one value"
        )
    with initialize_config_dir(config_dir=str(config.CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    config.validate(cfg)
    return cfg


def check(cfg: DictConfig, backward: Backward = L_model_backward) -> tuple[list[str], bool]:
    """(the report's lines, whether every layer passed) for the network ``cfg`` starts from."""
    model = cfg.model
    data = datasets.load(cfg.dataset, seed=cfg.seed, dtype=cfg.train.dtype)
    rng = np.random.default_rng(cfg.seed)
    n_train = data.X_train.shape[1]
    batch = np.sort(rng.choice(n_train, min(BATCH, n_train), replace=False))
    dims = layer_dims(data.n_x, model.depth, model.width, data.n_y)
    parameters = initialize_parameters_deep(
        dims, init=model.init, seed=cfg.seed, dtype=cfg.train.dtype
    )
    checks = gradient_check_n(
        parameters,
        data.X_train[:, batch],
        data.Y_train[:, batch],
        hidden_activation=model.activation,
        backward=backward,
        seed=cfg.seed,
    )
    cast = f" (train.dtype {cfg.train.dtype})" if cfg.train.dtype != "float64" else ""
    header = (
        f"gradient check of {cfg.dataset.name}, layers {dims}, {model.activation}, {model.init} "
        f"init, seed {cfg.seed}: {batch.size} of {n_train} training examples, eps {EPSILON:g}, "
        f"float64{cast}"
    )
    lines = [header, *map(layer_line, checks), verdict(checks)]
    return lines, all(c.passed for c in checks)


@entry.point(config.error_line)
def main(argv: list[str] | None = None) -> int:
    """The exit code: 0 passed, 1 a layer differs; bad overrides exit 2 with one line."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    cfg = compose_config(argv)
    lines, passed = check(cfg)
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(entry.run(main))
