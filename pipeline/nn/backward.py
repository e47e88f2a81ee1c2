"""The backward pass: the gradients of the cost J with respect to every W[l] and b[l].

    dZ[L] = AL - Y                                     (sigmoid + binary cross-entropy,
                                                        softmax + categorical cross-entropy)
    dZ[l] = dA[l] * g'(Z[l])                           (linear_activation_backward)
    dW[l] = 1/m dZ[l] A[l-1]^T                         (linear_backward)
    db[l] = 1/m sum_i dZ[l]
    dA[l-1] = W[l]^T dZ[l]

The output layer starts from the fused dZ[L] = AL - Y, never from
dAL = -(Y/AL - (1-Y)/(1-AL)), which divides by zero when AL saturates. dA[0] (the
gradient with respect to X) is not needed for an update and is not computed.
"""

import numpy as np

from pipeline.nn.activations import DERIVATIVES
from pipeline.nn.cost import check_targets
from pipeline.nn.forward import Cache, LinearCache

Gradients = dict[str, np.ndarray]


def linear_backward(
    dZ: np.ndarray, linear_cache: LinearCache, *, need_dA_prev: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dA_prev, dW, db) from dZ; dA_prev is None when ``need_dA_prev`` is False."""
    A_prev, W, _ = linear_cache
    m = A_prev.shape[1]
    dW = dZ @ A_prev.T
    dW /= m
    db = dZ.sum(axis=1, keepdims=True)
    db /= m
    if not need_dA_prev:
        return None, dW, db
    # With one output unit, W^T dZ is an outer product: broadcasting is 5x faster than matmul.
    dA_prev = W.T * dZ if W.shape[0] == 1 else W.T @ dZ
    return dA_prev, dW, db


def linear_activation_backward(
    dA: np.ndarray, cache: Cache, *, need_dA_prev: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dA_prev, dW, db) for a hidden layer. dA's buffer is reused for dZ: dA is overwritten."""
    linear_cache, (A, activation) = cache
    dZ = DERIVATIVES[activation](dA, A)
    return linear_backward(dZ, linear_cache, need_dA_prev=need_dA_prev)


def L_model_backward(AL: np.ndarray, Y: np.ndarray, caches: list[Cache]) -> Gradients:
    """{"dW1": ..., "db1": ..., "dWL": ..., "dbL": ...}; the caches carry everything else."""
    Y = check_targets(AL, Y)
    L = len(caches)
    grads: Gradients = {}
    dZ = AL - Y
    dA, grads[f"dW{L}"], grads[f"db{L}"] = linear_backward(
        dZ, caches[L - 1].linear_cache, need_dA_prev=L > 1
    )
    for l in range(L - 1, 0, -1):
        dA, grads[f"dW{l}"], grads[f"db{l}"] = linear_activation_backward(
            dA, caches[l - 1], need_dA_prev=l > 1
        )
    return grads
