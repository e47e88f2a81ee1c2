"""The cross-entropy cost J of the predictions AL against the labels Y.

    binary (AL, Y of shape (1, m)):      J = -1/m sum_i [ y log a + (1 - y) log(1 - a) ]
    multiclass (AL, Y one-hot (K, m)):   J = -1/m sum_i sum_k y_k log a_k

AL is clipped to [eps, 1 - eps] (eps = the dtype's machine epsilon, as in
scikit-learn's ``log_loss``), so J stays finite when predictions saturate to 0 or 1.

With L2 regularization of strength lambd (the course's name: lambda is Python's), the
squared Frobenius norm of every weight matrix is added; the biases are not penalised:

    J_reg = J + lambd/(2m) sum_l ||W[l]||_F^2,   ||W||_F^2 = sum_jk W_jk^2
"""

import math
from collections.abc import Mapping
from numbers import Real

import numpy as np


def compute_cost(AL: np.ndarray, Y: np.ndarray) -> float:
    """J(AL, Y), the mean cross-entropy over the m examples, as a Python float."""
    Y = check_targets(AL, Y)
    eps = np.finfo(AL.dtype).eps
    m = AL.shape[1]
    AL = np.clip(AL, eps, 1 - eps)
    if AL.shape[0] == 1:
        # log(a) where y = 1, log(1 - a) where y = 0: one log per example.
        np.subtract(1, AL, out=AL, where=Y == 0)
        return float(-np.log(AL).sum() / m)
    return float(-np.log(AL[Y == 1]).sum() / m)


def compute_cost_with_regularization(
    AL: np.ndarray, Y: np.ndarray, parameters: Mapping[str, np.ndarray], lambd: float
) -> float:
    """J_reg(AL, Y): the cross-entropy plus lambd/(2m) times the sum of ||W[l]||_F^2."""
    check_lambd(lambd)
    m = AL.shape[1]
    squared_norms = sum(np.vdot(W, W) for name, W in parameters.items() if name[0] == "W")
    return compute_cost(AL, Y) + float(lambd) / (2 * m) * float(squared_norms)


def check_lambd(lambd: float) -> None:
    """Raise ValueError unless ``lambd``, the L2 strength, is a finite number >= 0."""
    if isinstance(lambd, bool) or not isinstance(lambd, Real) or not 0 <= lambd < math.inf:
        raise ValueError(f"lambd must be a finite number >= 0; got {lambd!r}")


def check_targets(AL: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Return Y in AL's dtype; raise ValueError unless it is binary (1, m) or one-hot (K, m)."""
    Y = np.asarray(Y)
    if Y.shape != AL.shape:
        raise ValueError(f"Y must have the shape of AL {AL.shape}; got Y of shape {Y.shape}")
    binary = ((Y == 0) | (Y == 1)).all()  # not np.isin: it sorts, at every iteration
    if AL.shape[0] == 1:
        if not binary:
            raise ValueError(f"Y must be binary (0 or 1); got values {np.unique(Y)[:5]}")
    elif not (binary and (Y.sum(axis=0) == 1).all()):
        raise ValueError("Y must be one-hot: 0 or 1 with exactly one 1 in each column")
    return Y.astype(AL.dtype, copy=False)
