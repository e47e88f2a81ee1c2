"""The training loop: full-batch gradient descent with the lecture's four steps, or the
course's second part (an optimizer, mini-batches, L2, a decaying learning rate).

An iteration is an epoch: one update over the whole training part, or one update per
mini-batch (pipeline.nn.epoch, the lean epoch). Full-batch gradient descent keeps the
lecture's loop, which computes the train cost at every iteration on its way to the
update; the lean epoch computes it at logged points only, with a forward pass over the
whole training part, so that curves compare whatever the batch size.

It knows nothing of Hydra or MLflow: it returns the cost curves and the trained
parameters, and stops at once when the cost stops being finite. At each logged point it
calls its listeners (live curves, early stopping, ...), any of which may end training.
"""

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.job.data import Data
from pipeline.nn import (
    LR_DECAYS,
    L_model_backward,
    L_model_forward,
    MiniBatchTraining,
    compute_cost,
    initialize_parameters_deep,
    mini_batch_epoch,
    predict,
    update_parameters,
)
from pipeline.nn.optimizers import DEFAULTS, Hyperparameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    """A logged point: the iteration, its costs by curve name, and the parameters they were
    measured on (the loop's own arrays: copy them to keep them, never change them)."""

    iteration: int
    costs: Mapping[str, float]
    parameters: Mapping[str, np.ndarray]
    last: bool  # the point at train.iterations: training ends after it anyway
    # backpropagation's gradients at these parameters ({"dW1": ..., "db1": ...}): those of
    # the update that follows the point, the loop's own arrays like ``parameters``
    grads: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Stop:
    """A listener's request to end training after this point, and with which parameters."""

    reason: str
    parameters: Mapping[str, np.ndarray] | None = None  # None: the current ones
    iteration: int | None = None  # the iteration ``parameters`` come from
    # The run ends KILLED: its training was cut short from outside (a search's pruner; a
    # reproduction stopping where the run it reproduces was stopped), not by its config.
    killed: bool = False
    pruned: bool = False  # killed by a search's pruner: its result is not wanted


Listener = Callable[[Point], Stop | None]

MINI_BATCH_ORDER = 1  # an epoch's order is drawn from (seed, 1, epoch), apart from the init's


@dataclass(frozen=True)
class Optimization:
    """How each epoch updates the parameters; the defaults are the lecture's full-batch
    gradient descent (pipeline/job/config.py's TrainConfig holds a job's defaults)."""

    optimizer: str = "gd"  # a name in pipeline.nn.OPTIMIZERS
    hyper: Hyperparameters = DEFAULTS
    batch_size: int | None = None  # None: the whole training part, one update per epoch
    l2: float = 0.0  # the course's lambd
    lr_decay: str = "none"  # a name in pipeline.nn.LR_DECAYS
    decay_rate: float = 1.0

    @property
    def lean(self) -> bool:
        """Whether epochs run pipeline.nn.epoch's mini_batch_epoch rather than the lecture's
        loop: with mini-batches or an optimizer other than gradient descent."""
        return self.batch_size is not None or self.optimizer != "gd"

    def learning_rate(self, learning_rate0: float, epoch: int) -> float:
        return LR_DECAYS[self.lr_decay](learning_rate0, epoch, self.decay_rate)


GRADIENT_DESCENT = Optimization()


@dataclass
class Result:
    parameters: dict[str, np.ndarray]
    steps: list[int] = field(default_factory=list)
    # train_cost and the held-out curve: val_cost, or test_cost without a validation part
    curves: dict[str, list[float]] = field(default_factory=dict)
    train_accuracy: float = float("nan")
    val_accuracy: float = float("nan")  # nan without a validation part
    test_accuracy: float = float("nan")
    test_cost: float = float("nan")  # of the final parameters
    seconds: float = 0.0
    diverged_at: int | None = None  # the iteration whose cost was NaN or infinite
    stopped_at: int | None = None  # the point at which a listener ended training
    stop_reason: str | None = None  # why it did
    killed: bool = False  # the listener that stopped it cut it short (see Stop.killed)
    pruned: bool = False  # that listener was a search's pruner
    best_iteration: int | None = None  # where the kept parameters come from, if not the last

    @property
    def train_cost(self) -> list[float]:
        return self.curves.get("train_cost", [])

    @property
    def accuracies(self) -> str:
        """How the run did, in a few words: the accuracy that chooses first, test beside."""
        if self.diverged_at is not None:
            return "diverged"
        if "val_cost" not in self.curves:
            return f"test accuracy {self.test_accuracy:.3f}"
        return f"val accuracy {self.val_accuracy:.3f} (test {self.test_accuracy:.3f})"

    @property
    def selection_accuracy(self) -> float:
        """What runs are chosen by: the validation accuracy, or the test accuracy when there
        is no validation part (val_size=0, as before validation existed)."""
        return self.test_accuracy if "val_cost" not in self.curves else self.val_accuracy

    @property
    def final_step(self) -> int:
        """The iteration of the parameters the final metrics measure."""
        if self.best_iteration is not None:
            return self.best_iteration
        return self.steps[-1] if self.steps else 0


def layer_dims(n_x: int, depth: int, width: int, n_y: int) -> list[int]:
    """[n_x, width, ..., width, n_y] with ``depth`` hidden layers."""
    return [n_x, *[width] * depth, n_y]


def accuracy(X: np.ndarray, Y: np.ndarray, parameters: dict, activation: str) -> float:
    labels = Y if Y.shape[0] == 1 else Y.argmax(axis=0, keepdims=True)
    return float((predict(X, parameters, hidden_activation=activation) == labels).mean())


def cost_on(X: np.ndarray, Y: np.ndarray, parameters: Mapping, activation: str) -> float:
    AL, _ = L_model_forward(X, parameters, hidden_activation=activation)
    return compute_cost(AL, Y)


def held_out(data: Data) -> tuple[str, np.ndarray, np.ndarray]:
    """The part whose cost the curves follow beside training: validation, or test when
    there is none (val_size=0: the curves of before validation existed)."""
    if data.X_val is None:
        return "test_cost", data.X_test, data.Y_test
    return "val_cost", data.X_val, data.Y_val


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
    listeners: Sequence[Listener] = (),
    optimization: Optimization = GRADIENT_DESCENT,
) -> Result:
    """Train on ``data`` and record train and held-out cost at iterations 0, log_every, ...

    The curves end with one more point at step ``iterations``: the cost of the trained
    parameters. Training stops at the first iteration whose cost is not finite, or after
    a point at which a listener returns a Stop (keeping the parameters it hands back).
    The test part is looked at once, at the end, unless it is the held-out curve.
    Iterations are epochs, updated as ``optimization`` says; the mini-batches' order is
    drawn from ``seed`` and the epoch.
    """
    parameters = initialize_parameters_deep(dims, init=init, seed=seed, dtype=data.X_train.dtype)
    lean = lean_training(data, parameters, activation, optimization)
    if lean is not None:
        parameters = lean.parameters  # views of one vector, trained in place
    result = Result(parameters)
    held_out_curve, X_held_out, Y_held_out = held_out(data)
    result.curves = {"train_cost": [], held_out_curve: []}
    start = time.perf_counter()
    caches = None
    progress_every = max(1, iterations // 10)
    # A diverging run overflows on its way to NaN; the cost check below reports it.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i in range(iterations + 1):
            if lean is None:
                AL, caches = L_model_forward(
                    data.X_train, parameters, hidden_activation=activation, reuse=caches
                )
                cost = compute_cost(AL, data.Y_train)
            else:
                measured = i % log_every == 0 or i % progress_every == 0 or i == iterations
                cost = epoch_cost(lean, data, activation) if measured else finite_or_nan(lean)
            if not np.isfinite(cost):
                result.diverged_at = i
                break
            if i % progress_every == 0 or i == iterations:
                log.info("iteration %d/%d  train cost %.4f", i, iterations, cost)
            # before the point's listeners, who see them (the last point's serve them alone);
            # with mini-batches, the last batch's of the epoch before (none before the first)
            if lean is None:
                grads = L_model_backward(AL, data.Y_train, caches, optimization.l2)
            else:
                grads = lean.grads if lean.t else None
            if i % log_every == 0 or i == iterations:
                held_out_cost = cost_on(X_held_out, Y_held_out, parameters, activation)
                costs = {"train_cost": cost, held_out_curve: held_out_cost}
                result.steps.append(i)
                for name, value in costs.items():
                    result.curves[name].append(value)
                point = Point(i, costs, parameters, last=i == iterations, grads=grads)
                stops = [stop for stop in (listener(point) for listener in listeners) if stop]
                if stops:
                    result.stopped_at, result.stop_reason = i, stops[0].reason
                    result.pruned = stops[0].pruned
                    result.killed = stops[0].killed or stops[0].pruned
                    if stops[0].parameters is not None:
                        parameters = dict(stops[0].parameters)
                        result.best_iteration = stops[0].iteration
                    log.info("iteration %d: stopped, %s", i, stops[0].reason)
                    break
            if i == iterations:
                break
            rate = optimization.learning_rate(learning_rate, i)
            if lean is None:
                update_parameters(parameters, grads, rate)
            else:
                order = np.random.default_rng((seed, MINI_BATCH_ORDER, i))
                mini_batch_epoch(lean, rate, order)
        result.seconds = time.perf_counter() - start
        result.parameters = parameters
        if result.diverged_at is None:  # saturated but finite parameters can still overflow
            result.train_accuracy = accuracy(data.X_train, data.Y_train, parameters, activation)
            result.test_accuracy = accuracy(data.X_test, data.Y_test, parameters, activation)
            if data.X_val is None:
                result.test_cost = result.curves["test_cost"][-1]
            else:
                result.val_accuracy = accuracy(data.X_val, data.Y_val, parameters, activation)
                result.test_cost = cost_on(data.X_test, data.Y_test, parameters, activation)
    return result


def lean_training(
    data: Data, parameters: dict, activation: str, optimization: Optimization
) -> MiniBatchTraining | None:
    """The lean epoch's state for ``optimization``, or None for the lecture's loop."""
    if not optimization.lean:
        return None
    return MiniBatchTraining(
        data.X_train,
        data.Y_train,
        parameters,
        mini_batch_size=optimization.batch_size or data.X_train.shape[1],
        hidden_activation=activation,
        optimizer=optimization.optimizer,
        hyper=optimization.hyper,
        lambd=optimization.l2,
    )


def epoch_cost(lean: MiniBatchTraining, data: Data, activation: str) -> float:
    """The train cost (the cross-entropy, without L2's term) on the whole training part."""
    return cost_on(data.X_train, data.Y_train, lean.parameters, activation)


def finite_or_nan(lean: MiniBatchTraining) -> float:
    """0.0 while every parameter is finite, else NaN: between logged points, whether the
    cost would be finite, for the price of a sum over the parameters."""
    return 0.0 if math.isfinite(np.add.reduce(lean.theta)) else math.nan
