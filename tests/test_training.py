"""The training loop: curves at the right steps, divergence stops at once, bit-for-bit repeats,
listeners that stop training, and early stopping on a run that overfits."""

import warnings

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.job import data
from pipeline.job.config import DatasetConfig
from pipeline.job.early_stopping import EarlyStopping
from pipeline.job.loop import Stop, cost_on, layer_dims, train
from pipeline.store import plots


@pytest.fixture(scope="module")
def moons():
    return data.load(OmegaConf.structured(DatasetConfig(n_samples=400)), seed=0)


@pytest.fixture(scope="module")
def noisy():
    """Few noisy samples: a wide net overfits them, and val_cost turns up after a while."""
    d = DatasetConfig(name="moons", n_samples=100, noise=0.25, val_size=0.5)
    return data.load(OmegaConf.structured(d), seed=0)


def test_curves_are_logged_every_log_every_and_at_the_end(moons):
    result = train(moons, layer_dims(2, 2, 8, 1), learning_rate=0.5, iterations=95, log_every=10)
    assert result.steps == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert list(result.curves) == ["train_cost", "val_cost"]  # the test part: once, at the end
    assert len(result.curves["train_cost"]) == len(result.curves["val_cost"]) == 11
    assert result.train_cost[-1] < result.train_cost[0]
    assert 0.5 < result.test_accuracy <= 1 and 0.5 < result.val_accuracy <= 1
    assert result.test_cost == cost_on(moons.X_test, moons.Y_test, result.parameters, "relu")
    assert result.diverged_at is None and result.stopped_at is None
    assert result.selection_accuracy == result.val_accuracy


def test_without_a_validation_part_the_curves_are_train_and_test_as_before():
    d = data.load(OmegaConf.structured(DatasetConfig(n_samples=400, val_size=0)), seed=0)
    result = train(d, layer_dims(2, 2, 8, 1), learning_rate=0.5, iterations=40, log_every=10)
    assert list(result.curves) == ["train_cost", "test_cost"]
    assert result.test_cost == result.curves["test_cost"][-1]
    assert np.isnan(result.val_accuracy) and result.selection_accuracy == result.test_accuracy


def test_divergence_stops_at_the_first_non_finite_cost(moons):
    result = train(moons, layer_dims(2, 3, 64, 1), learning_rate=10.0, iterations=500, log_every=1)
    assert result.diverged_at is not None and result.diverged_at < 50
    assert result.steps == list(range(result.diverged_at))
    assert np.isnan(result.test_accuracy) and np.isnan(result.val_accuracy)


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
    assert a.curves == b.curves and a.test_cost == b.test_cost


def test_listeners_see_every_point_and_a_stop_ends_training_there(moons):
    seen = []

    def listener(point):
        seen.append((point.iteration, dict(point.costs), point.last))
        return Stop("enough") if point.iteration == 30 else None

    result = train(
        moons, layer_dims(2, 1, 4, 1), iterations=100, log_every=10, listeners=[listener]
    )
    assert [s[0] for s in seen] == result.steps == [0, 10, 20, 30]
    assert [s[1]["val_cost"] for s in seen] == result.curves["val_cost"]
    assert result.stopped_at == 30 and result.best_iteration is None
    assert not any(s[2] for s in seen)  # the last point (100) was never reached


def overfit(data_, **stopping):
    listeners = [EarlyStopping(**stopping)] if stopping else []
    dims = layer_dims(2, 2, 64, 1)
    return train(data_, dims, learning_rate=0.3, iterations=2000, log_every=20, listeners=listeners)


def test_early_stopping_on_a_run_that_overfits_keeps_its_best_point(noisy):
    plain = overfit(noisy)
    best = int(np.argmin(plain.curves["val_cost"]))
    assert plain.curves["val_cost"][-1] > plain.curves["val_cost"][best] * 1.2  # it overfits

    stopped = overfit(noisy, patience=10)
    val = stopped.curves["val_cost"]
    assert stopped.stopped_at < 2000 and stopped.steps[-1] == stopped.stopped_at  # stopped early
    assert stopped.curves["train_cost"] == plain.curves["train_cost"][: len(val)]  # same run
    assert stopped.best_iteration == stopped.steps[int(np.argmin(val))]
    assert stopped.stopped_at == stopped.best_iteration + 10 * 20  # patience points later
    # the restored parameters: its final val_cost is the best logged one, bit for bit
    assert cost_on(noisy.X_val, noisy.Y_val, stopped.parameters, "relu") == min(val)
    val_accuracy = (stopped.val_accuracy, plain.val_accuracy)
    assert val_accuracy[0] >= val_accuracy[1]  # the best point classifies validation no worse
    again = overfit(noisy, patience=10)
    assert again.curves == stopped.curves and again.test_accuracy == stopped.test_accuracy
    for key, value in again.parameters.items():
        np.testing.assert_array_equal(value, stopped.parameters[key])


def test_min_delta_counts_only_large_enough_improvements(noisy):
    strict = overfit(noisy, patience=5, min_delta=0.0)
    loose = overfit(noisy, patience=5, min_delta=0.05)
    assert loose.stopped_at < strict.stopped_at  # small improvements do not reset patience
    # the parameters kept are still those of the lowest val_cost logged
    assert loose.best_iteration == loose.steps[int(np.argmin(loose.curves["val_cost"]))]


def test_early_stopping_hands_back_the_best_parameters_at_the_last_iteration(moons):
    result = train(
        moons,
        layer_dims(2, 1, 8, 1),
        iterations=200,
        log_every=20,
        listeners=[EarlyStopping(patience=1000)],
    )
    val = result.curves["val_cost"]
    assert result.stopped_at == 200 and result.best_iteration == result.steps[int(np.argmin(val))]
    assert cost_on(moons.X_val, moons.Y_val, result.parameters, "relu") == min(val)
