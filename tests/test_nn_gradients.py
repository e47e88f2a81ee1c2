"""Centered-difference gradient check of L_model_backward, in float64."""

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

# Random inputs almost surely keep every pre-activation farther than eps from a ReLU kink,
# so the kinked activations meet the smooth ones' bound too.
TOLERANCE = 1e-7


def numerical_gradients(X, Y, parameters, activation, eps=1e-6, lambd=0.0):
    """Centred differences of the cost (regularized when ``lambd`` > 0) in every parameter."""

    def cost():
        AL = L_model_forward(X, parameters, hidden_activation=activation)[0]
        if lambd > 0:
            return compute_cost_with_regularization(AL, Y, parameters, lambd)
        return compute_cost(AL, Y)

    grads = {}
    for name, value in parameters.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            original = value[index]
            value[index] = original + eps
            plus = cost()
            value[index] = original - eps
            minus = cost()
            value[index] = original
            grad[index] = (plus - minus) / (2 * eps)
        grads[f"d{name}"] = grad
    return grads


def relative_error(analytic, numeric):
    a = np.concatenate([analytic[k].ravel() for k in sorted(numeric)])
    n = np.concatenate([numeric[k].ravel() for k in sorted(numeric)])
    return np.linalg.norm(a - n) / (np.linalg.norm(a) + np.linalg.norm(n))


def labels(n_classes, m, rng):
    y = rng.integers(0, n_classes, size=m)
    y[:n_classes] = np.arange(n_classes)  # every class present
    return y[None, :].astype(float) if n_classes == 2 else np.eye(n_classes)[:, y]


@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_backward_matches_centered_differences(activation, n_classes, depth):
    rng = np.random.default_rng(depth * 10 + n_classes)
    n_x, m = 4, 7
    n_out = 1 if n_classes == 2 else n_classes
    X = rng.standard_normal((n_x, m))
    Y = labels(n_classes, m, rng)
    parameters = initialize_parameters_deep([n_x] + [5] * depth + [n_out], init="xavier", seed=3)
    for key in parameters:  # non-zero biases so that every db is exercised
        if key.startswith("b"):
            parameters[key] += rng.standard_normal(parameters[key].shape) * 0.1

    AL, caches = L_model_forward(X, parameters, hidden_activation=activation)
    grads = L_model_backward(AL, Y, caches)
    numeric = numerical_gradients(X, Y, parameters, activation)

    assert set(grads) == set(numeric)
    for key in numeric:
        assert grads[key].shape == numeric[key].shape, key
    assert relative_error(grads, numeric) < TOLERANCE


def test_backward_gives_no_gradient_for_X():
    parameters = initialize_parameters_deep([3, 4, 1], seed=0)
    X = np.random.default_rng(0).standard_normal((3, 5))
    AL, caches = L_model_forward(X, parameters)
    grads = L_model_backward(AL, np.array([[0, 1, 0, 1, 1]]), caches)
    assert sorted(grads) == ["dW1", "dW2", "db1", "db2"]
