"""Numerical safety at |z| = 1e4, and a ValueError naming the argument for every bad input."""

import warnings

import numpy as np
import pytest

from pipeline.nn import (
    HIDDEN_ACTIVATIONS,
    L_model_backward,
    L_model_forward,
    compute_cost,
    initialize_parameters_deep,
    predict,
)


@pytest.fixture
def strict_numpy():
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        yield


@pytest.mark.usefixtures("strict_numpy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
@pytest.mark.parametrize("n_out", [1, 3])
def test_huge_preactivations_stay_finite(dtype, activation, n_out):
    # With W = 1e4 * I and X = +-1, every pre-activation is +-1e4 (or a sum of them).
    X = np.array([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 1.0, -1.0]], dtype=dtype)
    parameters = {
        "W1": np.eye(2, dtype=dtype) * 1e4,
        "b1": np.zeros((2, 1), dtype=dtype),
        "W2": (1e4 * np.array([[1.0], [-1.0], [0.5]][:n_out]) * np.ones(2)).astype(dtype),
        "b2": np.zeros((n_out, 1), dtype=dtype),
    }
    Y = np.array([[1, 0, 1, 0]]) if n_out == 1 else np.eye(3)[:, [0, 1, 2, 0]]
    AL, caches = L_model_forward(X, parameters, hidden_activation=activation)
    cost = compute_cost(AL, Y)
    grads = L_model_backward(AL, Y, caches)
    assert np.isfinite(cost)
    assert all(np.isfinite(g).all() and g.dtype == dtype for g in grads.values())
    assert np.isfinite(AL).all() and ((AL >= 0) & (AL <= 1)).all()


@pytest.mark.usefixtures("strict_numpy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logistic_regression_saturating_to_exactly_zero_and_one(dtype):
    X = np.array([[-1e4, 1e4, -1e4, 1e4]], dtype=dtype)
    parameters = {"W1": np.ones((1, 1), dtype=dtype), "b1": np.zeros((1, 1), dtype=dtype)}
    Y = np.array([[0, 1, 1, 0]])
    AL, caches = L_model_forward(X, parameters)
    assert set(AL.ravel().tolist()) == {0.0, 1.0}
    assert np.isfinite(compute_cost(AL, Y))
    grads = L_model_backward(AL, Y, caches)
    assert np.isfinite(grads["dW1"]).all()


def two_layer():
    return initialize_parameters_deep([2, 3, 1], seed=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: initialize_parameters_deep([2, 3], init="zeros"), "init must be one of .*'zeros'"),
        (lambda: initialize_parameters_deep([2, 0, 1]), r"layer_dims\[1\] must be .*; got 0"),
        (lambda: initialize_parameters_deep([2, -4, 1]), r"layer_dims\[1\] must be .*; got -4"),
        (lambda: initialize_parameters_deep([2.5, 1]), r"layer_dims\[0\] must be .*; got 2.5"),
        (lambda: initialize_parameters_deep([2]), r"layer_dims needs at least .*; got \[2\]"),
        (lambda: initialize_parameters_deep([2, 1], dtype=np.int32), "dtype must be .*'int32'"),
        (
            lambda: L_model_forward(np.ones((2, 4)), two_layer(), hidden_activation="swish"),
            "hidden_activation must be one of .*'swish'",
        ),
        (
            lambda: predict(np.ones((2, 4)), two_layer(), hidden_activation="gelu"),
            "hidden_activation must be one of .*'gelu'",
        ),
        (lambda: L_model_forward(np.ones((3, 4)), two_layer()), r"X must have shape .*\(3, 4\)"),
        (lambda: L_model_forward(np.ones(4), two_layer()), r"X must have shape .*\(4,\)"),
        (lambda: compute_cost(np.full((1, 4), 0.5), np.ones((1, 5))), r"Y must .*\(1, 5\)"),
        (lambda: compute_cost(np.full((1, 3), 0.5), [[0, 2, 1]]), r"Y must be binary .*\[0 1 2\]"),
        (
            lambda: compute_cost(np.full((3, 2), 1 / 3), [[1, 1], [0, 0], [0, 1]]),
            "Y must be one-hot",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("Y", "message"),
    [
        (np.array([[0, 1, 1]]), r"Y must have the shape of AL \(1, 4\); got Y of shape \(1, 3\)"),
        (np.array([[0, 1, 1, 0.5]]), "Y must be binary"),
    ],
)
def test_backward_rejects_bad_labels(Y, message):
    AL, caches = L_model_forward(np.ones((2, 4)), two_layer())
    with pytest.raises(ValueError, match=message):
        L_model_backward(AL, Y, caches)
