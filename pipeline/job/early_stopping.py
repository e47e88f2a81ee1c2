"""Early stopping: a training listener that ends training once val_cost stops improving.

It keeps a copy of the parameters of the lowest val_cost logged and hands them back when
training ends, whether patience ran out or the last iteration was reached.
"""

import math

from pipeline.job.loop import Point, Stop


class EarlyStopping:
    """Stop after ``patience`` logged points in a row without val_cost falling below the
    best so far by at least ``min_delta`` (and strictly: a flat curve is no improvement)."""

    def __init__(self, patience: int, min_delta: float = 0.0, curve: str = "val_cost") -> None:
        self.patience, self.min_delta, self.curve = patience, min_delta, curve
        self.reference = math.inf  # the cost at the last improvement that counted
        self.best = math.inf  # the lowest cost logged, whose parameters are kept
        self.best_iteration: int | None = None
        self.best_parameters: dict | None = None
        self.waited = 0  # logged points since the last improvement that counted

    def __call__(self, point: Point) -> Stop | None:
        cost = point.costs[self.curve]
        if cost < self.best:
            self.best, self.best_iteration = cost, point.iteration
            self.best_parameters = {k: v.copy() for k, v in point.parameters.items()}
        if cost < self.reference and self.reference - cost >= self.min_delta:
            self.reference, self.waited = cost, 0
        else:
            self.waited += 1
        if self.waited >= self.patience:
            reason = f"{self.curve} not improved by {self.min_delta:g} in {self.patience} points"
        elif point.last:
            reason = "last iteration"
        else:
            return None
        return Stop(reason, self.best_parameters, self.best_iteration)
