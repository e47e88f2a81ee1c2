"""The lecture's optimisation loop learns: moons with a small net, a separable set with depth 0."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_moons

from pipeline.nn import (
    L_model_backward,
    L_model_forward,
    compute_cost,
    initialize_parameters_deep,
    predict,
    update_parameters,
)


def gradient_descent(X, Y, layer_dims, learning_rate, iterations, **kwargs):
    dtype = kwargs.pop("dtype", np.float64)
    parameters = initialize_parameters_deep(layer_dims, seed=0, dtype=dtype)
    costs = []
    for _ in range(iterations):
        AL, caches = L_model_forward(X, parameters, **kwargs)
        costs.append(compute_cost(AL, Y))
        grads = L_model_backward(AL, Y, caches)
        update_parameters(parameters, grads, learning_rate)
    return parameters, costs


def test_small_network_fits_moons():
    x, y = make_moons(n_samples=400, noise=0.1, random_state=0)
    X, Y = x.T, y[None, :]
    parameters, costs = gradient_descent(X, Y, [2, 16, 16, 1], learning_rate=0.5, iterations=2000)
    accuracy = (predict(X, parameters) == Y).mean()
    assert accuracy >= 0.95
    assert costs[-1] < costs[0] / 4


def test_logistic_regression_depth_zero_separates_blobs():
    x, y = make_blobs(n_samples=200, centers=[[-3, -3], [3, 3]], cluster_std=1.0, random_state=0)
    X, Y = x.T, y[None, :]
    parameters, costs = gradient_descent(X, Y, [2, 1], learning_rate=0.1, iterations=300)
    assert sorted(parameters) == ["W1", "b1"]
    assert (predict(X, parameters) == Y).mean() == 1.0
    assert costs[-1] < costs[0]


def test_softmax_network_fits_three_blobs():
    x, y = make_blobs(n_samples=300, centers=3, cluster_std=1.0, random_state=2)
    X, Y = x.T, np.eye(3)[:, y]
    parameters, _ = gradient_descent(
        X, Y, [2, 8, 3], learning_rate=0.3, iterations=500, hidden_activation="tanh"
    )
    assert (predict(X, parameters, hidden_activation="tanh") == y).mean() >= 0.95


@pytest.mark.parametrize("n_out", [1, 3])
def test_float32_is_kept_end_to_end(n_out):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 30)).astype(np.float32)
    y = rng.integers(0, max(n_out, 2), size=30)
    Y = y[None, :] if n_out == 1 else np.eye(n_out)[:, y]
    parameters = initialize_parameters_deep([5, 6, 6, n_out], dtype=np.float32)
    AL, caches = L_model_forward(X, parameters)
    grads = L_model_backward(AL, Y, caches)
    update_parameters(parameters, grads, np.float64(0.1))
    arrays = [AL, *parameters.values(), *grads.values()]
    arrays += [a for cache in caches for a in (cache.linear_cache.A_prev, cache.activation_cache.A)]
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}
    # the cost of float32 predictions: a Python float equal to the float64 cross-entropy
    a = AL.astype(np.float64)
    # the probability given to each example's true class: a, 1 - a, or a[k] for one-hot Y
    p_true = np.where(Y == 1, a, 1 - a) if n_out == 1 else a[Y == 1]
    expected = -np.log(p_true).mean()
    cost = compute_cost(AL, Y)
    assert type(cost) is float and cost == pytest.approx(expected, rel=1e-6)


def test_same_seed_same_parameters_and_global_state_untouched():
    np.random.seed(123)  # noqa: NPY002 - the global state must stay untouched
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = initialize_parameters_deep([3, 4, 1], seed=7)
    b = initialize_parameters_deep([3, 4, 1], seed=7)
    c = initialize_parameters_deep([3, 4, 1], seed=8)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], c["W1"])


def test_reusing_the_previous_caches_gives_identical_training():
    x, y = make_moons(n_samples=100, noise=0.2, random_state=1)
    X, Y = x.T, y[None, :]
    fresh = initialize_parameters_deep([2, 8, 8, 1], seed=1)
    reused = initialize_parameters_deep([2, 8, 8, 1], seed=1)
    caches = None
    for _ in range(20):
        AL, fresh_caches = L_model_forward(X, fresh)
        update_parameters(fresh, L_model_backward(AL, Y, fresh_caches), 0.3)
        previous = [c.activation_cache.A for c in caches] if caches else None
        AL_reused, caches = L_model_forward(X, reused, reuse=caches)
        if previous:  # the same buffers, written again
            assert [id(a) for a in previous] == [id(c.activation_cache.A) for c in caches]
        np.testing.assert_array_equal(AL_reused, AL)
        update_parameters(reused, L_model_backward(AL_reused, Y, caches), 0.3)
    assert all(np.array_equal(fresh[k], reused[k]) for k in fresh)
