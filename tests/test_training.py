"""The training loop: curves at the right steps, divergence stops at once, bit-for-bit repeats."""

import warnings

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline import data, plots
from pipeline.config import DatasetConfig
from pipeline.training import layer_dims, train


@pytest.fixture(scope="module")
def moons():
    return data.load(OmegaConf.structured(DatasetConfig(n_samples=400)), seed=0)


def test_curves_are_logged_every_log_every_and_at_the_end(moons):
    result = train(moons, layer_dims(2, 2, 8, 1), learning_rate=0.5, iterations=95, log_every=10)
    assert result.steps == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert len(result.train_cost) == len(result.test_cost) == 11
    assert result.train_cost[-1] < result.train_cost[0]
    assert 0.5 < result.test_accuracy <= 1 and result.diverged_at is None


def test_divergence_stops_at_the_first_non_finite_cost(moons):
    result = train(moons, layer_dims(2, 3, 64, 1), learning_rate=10.0, iterations=500, log_every=1)
    assert result.diverged_at is not None and result.diverged_at < 50
    assert result.steps == list(range(result.diverged_at))
    assert np.isnan(result.test_accuracy)


def test_a_saturated_network_finishes_without_numpy_warnings(moons):
    # lr=100 saturates the net without a NaN cost; predictions then overflow in float64
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = train(moons, layer_dims(2, 3, 64, 1), learning_rate=100.0, iterations=100)
        plots.decision_boundary(moons.X_train, moons.Y_train[0], result.parameters, "relu", "t")
    assert result.diverged_at is None and 0 <= result.test_accuracy <= 1


def test_same_inputs_same_curve_bit_for_bit(moons):
    a = train(moons, layer_dims(2, 2, 8, 1), seed=5, iterations=50, log_every=5)
    b = train(moons, layer_dims(2, 2, 8, 1), seed=5, iterations=50, log_every=5)
    assert a.train_cost == b.train_cost and a.test_cost == b.test_cost
