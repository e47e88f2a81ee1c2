"""The training loop: full-batch gradient descent with the lecture's four steps.

It knows nothing of Hydra or MLflow: it returns the cost curves and the trained
parameters, and stops at once when the cost stops being finite.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.data import Data
from pipeline.nn import (
    L_model_backward,
    L_model_forward,
    compute_cost,
    initialize_parameters_deep,
    predict,
    update_parameters,
)

log = logging.getLogger(__name__)


@dataclass
class Result:
    parameters: dict[str, np.ndarray]
    steps: list[int] = field(default_factory=list)
    train_cost: list[float] = field(default_factory=list)
    test_cost: list[float] = field(default_factory=list)
    train_accuracy: float = float("nan")
    test_accuracy: float = float("nan")
    seconds: float = 0.0
    diverged_at: int | None = None  # the iteration whose cost was NaN or infinite


def layer_dims(n_x: int, depth: int, width: int, n_y: int) -> list[int]:
    """[n_x, width, ..., width, n_y] with ``depth`` hidden layers."""
    return [n_x, *[width] * depth, n_y]


def accuracy(X: np.ndarray, Y: np.ndarray, parameters: dict, activation: str) -> float:
    labels = Y if Y.shape[0] == 1 else Y.argmax(axis=0, keepdims=True)
    return float((predict(X, parameters, hidden_activation=activation) == labels).mean())


def cost_on_test(data: Data, parameters: dict, activation: str) -> float:
    AL, _ = L_model_forward(data.X_test, parameters, hidden_activation=activation)
    return compute_cost(AL, data.Y_test)


def train(
    data: Data,
    dims: Sequence[int],
    *,
    activation: str = "relu",
    init: str = "he",
    learning_rate: float = 0.1,
    iterations: int = 1000,
    log_every: int = 10,
    seed: int = 0,
) -> Result:
    """Train on ``data`` and record train and test cost at iterations 0, log_every, ...

    The curves end with one more point at step ``iterations``: the cost of the trained
    parameters. Training stops at the first iteration whose cost is not finite.
    """
    parameters = initialize_parameters_deep(dims, init=init, seed=seed, dtype=data.X_train.dtype)
    result = Result(parameters)
    start = time.perf_counter()
    caches = None
    progress_every = max(1, iterations // 10)
    # A diverging run overflows on its way to NaN; the cost check below reports it.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i in range(iterations + 1):
            AL, caches = L_model_forward(
                data.X_train, parameters, hidden_activation=activation, reuse=caches
            )
            cost = compute_cost(AL, data.Y_train)
            if not np.isfinite(cost):
                result.diverged_at = i
                break
            if i % log_every == 0 or i == iterations:
                result.steps.append(i)
                result.train_cost.append(cost)
                result.test_cost.append(cost_on_test(data, parameters, activation))
            if i % progress_every == 0 or i == iterations:
                log.info("iteration %d/%d  train cost %.4f", i, iterations, cost)
            if i == iterations:
                break
            update_parameters(parameters, L_model_backward(AL, data.Y_train, caches), learning_rate)
        result.seconds = time.perf_counter() - start
        if result.diverged_at is None:  # saturated but finite parameters can still overflow
            result.train_accuracy = accuracy(data.X_train, data.Y_train, parameters, activation)
            result.test_accuracy = accuracy(data.X_test, data.Y_test, parameters, activation)
    return result
