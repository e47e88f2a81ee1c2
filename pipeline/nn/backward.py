"""The backward pass: the gradients of the cost J with respect to every W[l] and b[l].

    dZ[L] = AL - Y                                     (sigmoid + binary cross-entropy,
                                                        softmax + categorical cross-entropy)
    dZ[l] = dA[l] * g'(Z[l])                           (linear_activation_backward)
    dW[l] = 1/m dZ[l] A[l-1]^T                         (linear_backward)
    db[l] = 1/m sum_i dZ[l]
    dA[l-1] = W[l]^T dZ[l]

With L2 regularization of strength lambd (compute_cost_with_regularization), each
dW[l] gains the penalty's gradient:

    dW[l] += lambd/m W[l]                              (only when lambd > 0)

The output layer starts from the fused dZ[L] = AL - Y, never from
dAL = -(Y/AL - (1-Y)/(1-AL)), which divides by zero when AL saturates. dA[0] (the
gradient with respect to X) is not needed for an update and is not computed.
"""

import numpy as np

from pipeline.nn.activations import DERIVATIVES
from pipeline.nn.cost import check_lambd, check_targets
from pipeline.nn.forward import Cache, LinearCache

Gradients = dict[str, np.ndarray]
# (dA_prev, dW, db): arrays to write them into, or None to allocate
LayerGradients = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]


def linear_backward(
    dZ: np.ndarray,
    linear_cache: LinearCache,
    *,
    need_dA_prev: bool = True,
    out: LayerGradients = (None, None, None),
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dA_prev, dW, db) from dZ, written into ``out``'s arrays where given; dA_prev is
    None when ``need_dA_prev`` is False."""
    A_prev, W, _ = linear_cache
    dA_prev, dW, db = out
    m = A_prev.shape[1]
    dW = np.matmul(dZ, A_prev.T, out=dW)
    dW /= m
    # np.add.reduce is np.sum without its Python wrapper, which costs more at batch sizes
    db = np.add.reduce(dZ, axis=1, keepdims=True, out=db)
    db /= m
    if not need_dA_prev:
        return None, dW, db
    # With one output unit, W^T dZ is an outer product: broadcasting is 5x faster than matmul.
    # Into a given array, broadcasting goes through a 64 KB buffer at every call; matmul,
    # whose products have nothing to sum with an inner dimension of 1, gives the same bits.
    product = np.multiply if W.shape[0] == 1 and dA_prev is None else np.matmul
    return product(W.T, dZ, out=dA_prev), dW, db


def add_l2_gradient(dW: np.ndarray, W: np.ndarray, lambd: float, m: int, scratch=None) -> None:
    """dW += lambd/m W, in place (through ``scratch``, an array of W's shape, if given)."""
    dW += np.multiply(W, float(lambd) / m, out=scratch)


def linear_activation_backward(
    dA: np.ndarray,
    cache: Cache,
    *,
    need_dA_prev: bool = True,
    out: LayerGradients = (None, None, None),
    scratch: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dA_prev, dW, db) for a hidden layer. dA's buffer is reused for dZ: dA is overwritten.
    ``out`` and ``scratch`` (an array of A's shape) are as in linear_backward and g'."""
    linear_cache, (A, activation) = cache
    dZ = DERIVATIVES[activation](dA, A, scratch)
    return linear_backward(dZ, linear_cache, need_dA_prev=need_dA_prev, out=out)


def L_model_backward(
    AL: np.ndarray, Y: np.ndarray, caches: list[Cache], lambd: float = 0.0
) -> Gradients:
    """{"dW1": ..., "db1": ..., "dWL": ..., "dbL": ...}; the caches carry everything else.

    ``lambd`` > 0 adds the L2 penalty's gradient lambd/m W[l] to every dW[l]; with 0 the
    arithmetic is the unregularized one, bit for bit.
    """
    check_lambd(lambd)
    Y = check_targets(AL, Y)
    grads: Gradients = {}
    for l, (dW, db) in enumerate(backward_through(AL - Y, caches), start=1):
        grads[f"dW{l}"], grads[f"db{l}"] = dW, db
    if lambd > 0:
        m = AL.shape[1]
        for l, cache in enumerate(caches, start=1):
            add_l2_gradient(grads[f"dW{l}"], cache.linear_cache.W, lambd, m)
    return grads


def backward_through(
    dZ: np.ndarray,
    caches: list[Cache],
    outs: list[LayerGradients] | None = None,
    scratches: list[np.ndarray] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(dW1, db1), ..., (dWL, dbL)] from the output layer's dZ, unchecked: layer l writes
    into ``outs[l]`` (dA_prev, dW, db) and works in ``scratches[l]`` where given."""
    L = len(caches)
    outs = outs or [(None, None, None)] * L
    dA, dW, db = linear_backward(
        dZ, caches[L - 1].linear_cache, need_dA_prev=L > 1, out=outs[L - 1]
    )
    grads = [(dW, db)]
    for l in range(L - 1, 0, -1):
        scratch = scratches[l - 1] if scratches else None
        dA, dW, db = linear_activation_backward(
            dA, caches[l - 1], need_dA_prev=l > 1, out=outs[l - 1], scratch=scratch
        )
        grads.append((dW, db))
    return grads[::-1]
