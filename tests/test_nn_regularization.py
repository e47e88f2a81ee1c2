"""L2 regularization: the cost and its gradient against centred differences, and lambd = 0
leaving the backward pass's arithmetic exactly as it was."""

import numpy as np
import pytest

from pipeline.nn import (
    HIDDEN_ACTIVATIONS,
    L_model_backward,
    L_model_forward,
    compute_cost,
    compute_cost_with_regularization,
    initialize_parameters_deep,
)
from tests.test_nn_gradients import TOLERANCE, labels, numerical_gradients, relative_error


def todays_derivative(activation, dA, A):
    """g'(Z) times dA, in the arithmetic the backward pass had before regularization."""
    if activation == "relu":
        return dA * (A > 0)
    if activation == "leaky_relu":
        slope = (A > 0).astype(dA.dtype)
        slope *= 1 - 0.01
        slope += 0.01
        return dA * slope
    if activation == "tanh":
        return dA * (1 - A * A)
    return dA * (A * (1 - A))


def todays_backward(AL, Y, caches):
    """The backward pass before regularization, written out layer by layer."""
    L = len(caches)
    grads = {}
    dZ = AL - Y
    for l in range(L, 0, -1):
        (A_prev, W, _), _ = caches[l - 1]
        m = A_prev.shape[1]
        grads[f"dW{l}"] = (dZ @ A_prev.T) / m
        grads[f"db{l}"] = dZ.sum(axis=1, keepdims=True) / m
        if l > 1:
            dA = W.T * dZ if W.shape[0] == 1 else W.T @ dZ
            A, activation = caches[l - 2].activation_cache
            dZ = todays_derivative(activation, dA, A)
    return grads


def network(n_classes, depth, dtype=np.float64, m=9, seed=0):
    rng = np.random.default_rng(seed)
    n_x, n_out = 4, 1 if n_classes == 2 else n_classes
    X = rng.standard_normal((n_x, m)).astype(dtype)
    Y = labels(n_classes, m, rng).astype(dtype)
    parameters = initialize_parameters_deep(
        [n_x] + [5] * depth + [n_out], init="xavier", seed=seed + 1, dtype=dtype
    )
    for key in parameters:  # non-zero biases so that every db is exercised
        if key.startswith("b"):
            parameters[key] += (rng.standard_normal(parameters[key].shape) * 0.1).astype(dtype)
    return X, Y, parameters


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
@pytest.mark.parametrize(("n_classes", "depth"), [(2, 1), (3, 2), (2, 0)])
def test_lambd_zero_is_todays_backward_bit_for_bit(dtype, activation, n_classes, depth):
    X, Y, parameters = network(n_classes, depth, dtype)
    AL, caches = L_model_forward(X, parameters, hidden_activation=activation)
    expected = todays_backward(AL, Y, caches)
    for grads in (L_model_backward(AL, Y, caches), L_model_backward(AL, Y, caches, lambd=0.0)):
        assert grads.keys() == expected.keys()
        for key, value in expected.items():
            assert grads[key].dtype == np.dtype(dtype)
            assert np.array_equal(grads[key], value), key


@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
@pytest.mark.parametrize(("n_classes", "depth"), [(2, 0), (2, 2), (3, 1), (3, 3)])
def test_regularized_gradient_matches_centred_differences(activation, n_classes, depth):
    X, Y, parameters = network(n_classes, depth, seed=depth)
    lambd = 0.7  # large enough that the penalty's gradient is a good part of every dW
    AL, caches = L_model_forward(X, parameters, hidden_activation=activation)
    grads = L_model_backward(AL, Y, caches, lambd=lambd)
    numeric = numerical_gradients(X, Y, parameters, activation, lambd=lambd)
    assert relative_error(grads, numeric) < TOLERANCE
    # the check can tell: the unregularized gradient is far from the regularized cost's
    assert relative_error(L_model_backward(AL, Y, caches), numeric) > 1e-3


@pytest.mark.parametrize("n_classes", [2, 3])
def test_regularized_cost_adds_the_frobenius_norms_of_the_weights(n_classes):
    X, Y, parameters = network(n_classes, depth=2, m=6)
    AL, _ = L_model_forward(X, parameters, hidden_activation="tanh")
    weights = [parameters[f"W{l}"] for l in (1, 2, 3)]
    penalty = 0.3 / (2 * 6) * sum(float(np.sum(W**2)) for W in weights)
    cost = compute_cost_with_regularization(AL, Y, parameters, 0.3)
    assert type(cost) is float
    assert cost == pytest.approx(compute_cost(AL, Y) + penalty, rel=1e-14)
    assert compute_cost_with_regularization(AL, Y, parameters, 0.0) == compute_cost(AL, Y)


@pytest.mark.parametrize("lambd", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_lambd_is_a_value_error_naming_it(lambd):
    X, Y, parameters = network(2, depth=1)
    AL, caches = L_model_forward(X, parameters)
    with pytest.raises(ValueError, match="lambd"):
        compute_cost_with_regularization(AL, Y, parameters, lambd)
    with pytest.raises(ValueError, match="lambd"):
        L_model_backward(AL, Y, caches, lambd=lambd)
