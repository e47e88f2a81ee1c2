"""The cross-entropy cost J of the predictions AL against the labels Y.

    binary (AL, Y of shape (1, m)):      J = -1/m sum_i [ y log a + (1 - y) log(1 - a) ]
    multiclass (AL, Y one-hot (K, m)):   J = -1/m sum_i sum_k y_k log a_k

AL is clipped to [eps, 1 - eps] (eps = the dtype's machine epsilon, as in
scikit-learn's ``log_loss``), so J stays finite when predictions saturate to 0 or 1.
"""

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
