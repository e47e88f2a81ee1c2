"""compute_cost against scikit-learn's log_loss, and its safety at saturation."""

import numpy as np
import pytest
from sklearn.metrics import log_loss

from pipeline.nn import compute_cost


def test_binary_cost_equals_log_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=50)
    AL = rng.uniform(0.01, 0.99, size=(1, 50))
    expected = log_loss(y, AL[0], labels=[0, 1])
    assert compute_cost(AL, y[None, :]) == pytest.approx(expected, rel=1e-12)


def test_multiclass_cost_equals_log_loss():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=60)
    logits = rng.standard_normal((4, 60))
    AL = np.exp(logits) / np.exp(logits).sum(axis=0)
    expected = log_loss(y, AL.T, labels=[0, 1, 2, 3])
    assert compute_cost(AL, np.eye(4)[:, y]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cost_is_finite_when_predictions_saturate(dtype):
    AL = np.array([[0.0, 1.0, 0.0, 1.0]], dtype=dtype)
    Y = np.array([[1, 0, 0, 1]])
    with np.errstate(all="raise"):
        cost = compute_cost(AL, Y)
    assert np.isfinite(cost)
    # two confident mistakes out of four examples, each costing -log(eps)
    assert cost == pytest.approx(-np.log(np.finfo(dtype).eps) / 2, rel=1e-3)


def test_multiclass_cost_is_finite_for_a_zero_probability():
    AL = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    Y = np.array([[0, 0], [1, 1], [0, 0]])
    assert np.isfinite(compute_cost(AL, Y))


def test_cost_does_not_modify_its_arguments():
    AL = np.array([[0.2, 0.7, 0.9]])
    Y = np.array([[0, 1, 0]])
    compute_cost(AL, Y)
    np.testing.assert_array_equal(AL, [[0.2, 0.7, 0.9]])
