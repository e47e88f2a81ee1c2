"""Learning dynamics per layer: a training listener measuring, at each logged point, how
large each layer's gradient, weights and update are.

For each layer l = 1..L, with Frobenius norms of arrays the loop already holds (the
point's parameters and backpropagation's gradients, before the update; with mini-batches,
the gradients of the epoch's last batch before the point):

    grad_norm/W{l}     = ||dW[l]||
    weight_norm/W{l}   = ||W[l]||
    update_ratio/W{l}  = learning_rate ||dW[l]|| / ||W[l]||     (the update's relative size)

A vanishing gradient shows as grad_norm/W1 orders of magnitude below grad_norm/WL.
"""

import math
from collections.abc import Callable, Mapping

import numpy as np

from pipeline.job.loop import Point


def layer_metrics(point: Point, learning_rate: float) -> dict[str, float]:
    """{"grad_norm/W1": ..., "weight_norm/W1": ..., "update_ratio/W1": ..., ...} of ``point``."""
    metrics = {}
    for l in range(1, len(point.grads) // 2 + 1):
        grad = float(np.linalg.norm(point.grads[f"dW{l}"]))
        weight = float(np.linalg.norm(point.parameters[f"W{l}"]))
        metrics[f"grad_norm/W{l}"] = grad
        metrics[f"weight_norm/W{l}"] = weight
        # all-zero weights: an update of any size is infinitely larger (nan with no update)
        ratio = learning_rate * grad / weight if weight else math.inf if grad else math.nan
        metrics[f"update_ratio/W{l}"] = ratio
    return metrics


class Dynamics:
    """The listener: each point's layer_metrics handed to ``send(step, metrics)`` (the live
    curves' ``keep``: they go in the curves' batches), each layer's gradient norms kept."""

    def __init__(
        self, learning_rate: float, send: Callable[[int, Mapping[str, float]], None]
    ) -> None:
        self.learning_rate, self.send = learning_rate, send
        self.steps: list[int] = []
        self.grad_norms: dict[str, list[float]] = {}  # "W1" -> its gradient's norm at each step

    def __call__(self, point: Point) -> None:
        if point.grads is None:  # mini-batches' first point: no batch has been through yet
            return
        metrics = layer_metrics(point, self.learning_rate)
        self.steps.append(point.iteration)
        for key, value in metrics.items():
            if key.startswith("grad_norm/"):
                self.grad_norms.setdefault(key.removeprefix("grad_norm/"), []).append(value)
        self.send(point.iteration, metrics)
