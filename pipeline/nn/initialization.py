"""Parameter initialisation: W[l] of shape (n_l, n_{l-1}) and b[l] = 0 of shape (n_l, 1).

    he:     W[l] ~ N(0, 1) * sqrt(2 / n_{l-1})   (for ReLU layers)
    xavier: W[l] ~ N(0, 1) * sqrt(1 / n_{l-1})   (for tanh and sigmoid layers)
    small:  W[l] ~ N(0, 1) * 0.01                (the course's first version)

The draws come from a ``np.random.Generator`` seeded with ``seed``: the global
``np.random`` state is never read, so the same seed gives the same parameters.
"""

from collections.abc import Callable, Sequence

import numpy as np

Parameters = dict[str, np.ndarray]

INIT_SCALES: dict[str, Callable[[int], float]] = {
    "he": lambda n_prev: np.sqrt(2.0 / n_prev),
    "xavier": lambda n_prev: np.sqrt(1.0 / n_prev),
    "small": lambda n_prev: 0.01,
}

DTYPES = ("float64", "float32")  # the dtypes every array of the network may have


def initialize_parameters_deep(
    layer_dims: Sequence[int],
    *,
    init: str = "he",
    seed: int = 0,
    dtype: type | np.dtype = np.float64,
) -> Parameters:
    """{"W1": ..., "b1": ..., "WL": ..., "bL": ...} for ``layer_dims = [n_x, n_1, ..., n_L]``."""
    check_layer_dims(layer_dims)
    if init not in INIT_SCALES:
        raise ValueError(f"init must be one of {', '.join(INIT_SCALES)}; got {init!r}")
    dtype = np.dtype(dtype)
    if dtype.name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype.name!r}")

    rng = np.random.default_rng(seed)
    scale = INIT_SCALES[init]
    parameters: Parameters = {}
    for l in range(1, len(layer_dims)):
        n, n_prev = layer_dims[l], layer_dims[l - 1]
        W = rng.standard_normal((n, n_prev)) * scale(n_prev)
        parameters[f"W{l}"] = W.astype(dtype, copy=False)
        parameters[f"b{l}"] = np.zeros((n, 1), dtype=dtype)
    return parameters


def check_layer_dims(layer_dims: Sequence[int]) -> None:
    """Raise ValueError unless ``layer_dims`` is [n_x, n_1, ..., n_L] with every n >= 1."""
    if len(layer_dims) < 2:
        raise ValueError(f"layer_dims needs at least [n_x, n_L]; got {list(layer_dims)}")
    for l, n in enumerate(layer_dims):
        if int(n) != n or n < 1:
            raise ValueError(f"layer_dims[{l}] must be an integer >= 1; got {n!r}")


def n_layers(parameters: Parameters) -> int:
    """L, the number of layers with weights (hidden layers + output layer)."""
    return len(parameters) // 2
