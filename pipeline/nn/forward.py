"""The forward pass, layer by layer, keeping the caches the backward pass needs.

    Z[l] = W[l] A[l-1] + b[l]          (linear_forward)
    A[l] = g[l](Z[l])                  (linear_activation_forward)

with A[0] = X of shape (n_x, m). Hidden layers use ``hidden_activation``; the
output layer is one sigmoid unit (two classes) or a softmax (K >= 3 classes).

Each layer's cache is ``(linear_cache, activation_cache)`` with
linear_cache = (A_prev, W, b) and activation_cache = (A, activation). The slides
keep Z in the activation cache; here g'(Z) is written in terms of A, so A is kept
instead and Z's buffer is reused for A (half the memory, no copy).
"""

from typing import NamedTuple

import numpy as np

from pipeline.nn.activations import (
    HIDDEN_ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    check_activation,
    output_activation,
)
from pipeline.nn.initialization import Parameters, n_layers


class LinearCache(NamedTuple):
    A_prev: np.ndarray
    W: np.ndarray
    b: np.ndarray


class ActivationCache(NamedTuple):
    A: np.ndarray
    activation: str


class Cache(NamedTuple):
    linear_cache: LinearCache
    activation_cache: ActivationCache


def linear_forward(
    A_prev: np.ndarray, W: np.ndarray, b: np.ndarray, out: np.ndarray | None = None
) -> tuple[np.ndarray, LinearCache]:
    """Z = W A_prev + b, b broadcast over the m examples (columns); Z goes to ``out`` if given."""
    Z = np.matmul(W, A_prev, out=out)
    Z += b
    return Z, LinearCache(A_prev, W, b)


def linear_activation_forward(
    A_prev: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    activation: str,
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> tuple[np.ndarray, Cache]:
    """A = g(W A_prev + b); g is computed in place on Z's buffer (``out`` if given), with
    ``scratch`` (an array of Z's shape) as its work space if given."""
    Z, linear_cache = linear_forward(A_prev, W, b, out)
    g = HIDDEN_ACTIVATIONS.get(activation) or OUTPUT_ACTIVATIONS[activation]
    A = g(Z, scratch)
    return A, Cache(linear_cache, ActivationCache(A, activation))


Layer = tuple[np.ndarray, np.ndarray, str]  # (W, b, activation)


def L_model_forward(
    X: np.ndarray,
    parameters: Parameters,
    *,
    hidden_activation: str = "relu",
    reuse: list[Cache] | None = None,
) -> tuple[np.ndarray, list[Cache]]:
    """[LINEAR -> g] * (L-1) -> LINEAR -> sigmoid/softmax; returns AL and the L caches.

    X is cast to the parameters' dtype (no copy when it already has it). ``reuse``
    takes the caches of the previous iteration, which the update has made stale: their
    activation buffers are overwritten instead of allocating new ones. Fresh memory costs
    page faults and cold caches, about 10% of an epoch.
    """
    check_activation(hidden_activation)
    W1 = parameters["W1"]
    X = np.asarray(X, dtype=W1.dtype)
    if X.ndim != 2 or X.shape[0] != W1.shape[1]:
        raise ValueError(
            f"X must have shape (n_x, m) with n_x = {W1.shape[1]} (W1 is {W1.shape}); "
            f"got X of shape {X.shape}"
        )
    outs = [cache.activation_cache.A for cache in reuse] if reuse else None
    return forward_through(X, network_layers(parameters, hidden_activation), outs)


def network_layers(parameters: Parameters, hidden_activation: str) -> list[Layer]:
    """[(W1, b1, g1), ..., (WL, bL, gL)]: the hidden activation, then sigmoid or softmax."""
    L = n_layers(parameters)
    layers = []
    for l in range(1, L + 1):
        W, b = parameters[f"W{l}"], parameters[f"b{l}"]
        activation = hidden_activation if l < L else output_activation(W.shape[0])
        layers.append((W, b, activation))
    return layers


def forward_through(
    X: np.ndarray,
    layers: list[Layer],
    outs: list[np.ndarray] | None = None,
    scratches: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, list[Cache]]:
    """AL and the caches of X through ``layers``, unchecked: layer l writes its A into
    ``outs[l]`` and works in ``scratches[l]`` where given (both of A's shape)."""
    caches = []
    A = X
    for l, (W, b, activation) in enumerate(layers):
        out = outs[l] if outs else None
        scratch = scratches[l] if scratches else None
        A, cache = linear_activation_forward(A, W, b, activation, out, scratch)
        caches.append(cache)
    return A, caches


def predict(
    X: np.ndarray, parameters: Parameters, *, hidden_activation: str = "relu"
) -> np.ndarray:
    """Labels of shape (1, m): 1{AL > 0.5} for one sigmoid unit, argmax_k AL[k] for softmax."""
    AL, _ = L_model_forward(X, parameters, hidden_activation=hidden_activation)
    return labels_of(AL)


def labels_of(AL: np.ndarray) -> np.ndarray:
    """Labels of shape (1, m) from the output layer's activations AL."""
    if AL.shape[0] == 1:
        return (AL > 0.5).astype(np.int64)
    return AL.argmax(axis=0, keepdims=True)
