"""One step of each optimizer against its textbook formula, written out here in float64;
the table's steps on packed vectors; float32 kept; learning-rate decay."""

import numpy as np
import pytest

from pipeline.nn import initialize_parameters_deep, update_parameters
from pipeline.nn.decay import LR_DECAYS, check_lr_decay
from pipeline.nn.epoch import pack
from pipeline.nn.optimizers import (
    DEFAULTS,
    OPTIMIZERS,
    Hyperparameters,
    initialize_adam,
    initialize_rmsprop,
    initialize_velocity,
    update_parameters_with_adam,
    update_parameters_with_momentum,
    update_parameters_with_rmsprop,
    zeros_like_gradients,
)

LEARNING_RATE, BETA, BETA1, BETA2, EPSILON = 0.01, 0.8, 0.85, 0.99, 1e-7


def state(dtype=np.float64, seed=0):
    """Parameters, gradients and non-zero moments (s > 0) of a [4, 5, 3] network."""
    rng = np.random.default_rng(seed)
    parameters = initialize_parameters_deep([4, 5, 3], seed=seed, dtype=dtype)
    grads = {f"d{k}": rng.standard_normal(v.shape).astype(dtype) for k, v in parameters.items()}
    v = {k: rng.standard_normal(g.shape).astype(dtype) for k, g in grads.items()}
    s = {k: rng.random(g.shape).astype(dtype) for k, g in grads.items()}
    return parameters, grads, v, s


def copies(arrays):
    return {k: a.copy() for k, a in arrays.items()}


def assert_close(actual, expected, rtol):
    assert actual.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=0, err_msg=key)


def test_gd_step_is_the_textbook_formula():
    parameters, grads, _, _ = state()
    expected = {k: W - LEARNING_RATE * grads[f"d{k}"] for k, W in parameters.items()}
    update_parameters(parameters, grads, LEARNING_RATE)
    assert_close(parameters, expected, rtol=1e-15)


def test_momentum_step_is_the_textbook_formula():
    parameters, grads, v, _ = state()
    v_new = {k: BETA * v[k] + (1 - BETA) * grads[k] for k in v}
    expected = {k: W - LEARNING_RATE * v_new[f"d{k}"] for k, W in parameters.items()}
    returned = update_parameters_with_momentum(parameters, grads, v, BETA, LEARNING_RATE)
    assert returned[0] is parameters and returned[1] is v
    assert_close(v, v_new, rtol=1e-15)
    assert_close(parameters, expected, rtol=1e-14)


@pytest.mark.parametrize("t", [1, 2, 7])
def test_adam_step_is_the_textbook_formula(t):
    """The course's formula, which is also torch.optim.Adam's: bias-corrected moments,
    epsilon added to the square root of the corrected second moment."""
    parameters, grads, v, s = state(seed=t)
    v_new = {k: BETA1 * v[k] + (1 - BETA1) * grads[k] for k in v}
    s_new = {k: BETA2 * s[k] + (1 - BETA2) * grads[k] ** 2 for k in s}
    expected = {}
    for k, W in parameters.items():
        v_corrected = v_new[f"d{k}"] / (1 - BETA1**t)
        s_corrected = s_new[f"d{k}"] / (1 - BETA2**t)
        expected[k] = W - LEARNING_RATE * v_corrected / (np.sqrt(s_corrected) + EPSILON)
    update_parameters_with_adam(parameters, grads, v, s, t, LEARNING_RATE, BETA1, BETA2, EPSILON)
    assert_close(v, v_new, rtol=1e-15)
    assert_close(s, s_new, rtol=1e-15)
    assert_close(parameters, expected, rtol=1e-12)


@pytest.mark.parametrize("t", [1, 5])
def test_rmsprop_step_is_adams_second_moment_alone(t):
    parameters, grads, _, s = state(seed=t)
    s_new = {k: BETA2 * s[k] + (1 - BETA2) * grads[k] ** 2 for k in s}
    expected = {}
    for k, W in parameters.items():
        s_corrected = s_new[f"d{k}"] / (1 - BETA2**t)
        expected[k] = W - LEARNING_RATE * grads[f"d{k}"] / (np.sqrt(s_corrected) + EPSILON)
    update_parameters_with_rmsprop(parameters, grads, s, t, LEARNING_RATE, BETA2, EPSILON)
    assert_close(s, s_new, rtol=1e-15)
    assert_close(parameters, expected, rtol=1e-12)
    # and so Adam with beta1 = 0 takes the same step
    adams, _, _, adams_s = state(seed=t)
    update_parameters_with_adam(
        adams,
        grads,
        {k: 0 * g for k, g in grads.items()},
        adams_s,
        t,
        LEARNING_RATE,
        0.0,
        BETA2,
        EPSILON,
    )
    assert_close(adams, parameters, rtol=1e-15)


def test_the_first_moments_start_at_zero_beside_each_parameter():
    parameters, *_ = state()
    v, s = initialize_adam(parameters)
    for moments in (v, s, initialize_velocity(parameters), initialize_rmsprop(parameters)):
        assert moments.keys() == {f"d{k}" for k in parameters}
        for k, W in parameters.items():
            assert moments[f"d{k}"].shape == W.shape and not moments[f"d{k}"].any()
    assert v["dW1"] is not s["dW1"]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_table_step_on_packed_vectors_is_the_step_per_array_bit_for_bit(name):
    """The training loop steps the whole network at once on one flat vector each."""
    optimizer = OPTIMIZERS[name]
    hyper = Hyperparameters(BETA, BETA1, BETA2, EPSILON)
    per_array, grads, v, s = state(seed=3)
    moments = {"v": v, "s": s}
    flat_theta, packed = pack(copies(per_array))
    flat_grad, _ = pack(grads)
    flat_moments = [pack(copies(moments[m]))[0] for m in optimizer.moments]
    for t in (1, 2, 3):
        for k, W in per_array.items():
            in_moments = tuple(moments[m][f"d{k}"] for m in optimizer.moments)
            optimizer.step(W, grads[f"d{k}"], in_moments, t, LEARNING_RATE, hyper)
        optimizer.step(
            flat_theta, flat_grad, flat_moments, t, LEARNING_RATE, hyper, np.empty_like(flat_theta)
        )
    for k, W in per_array.items():
        assert np.array_equal(packed[k], W), k


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_stays_float32(name):
    parameters, grads, _, _ = state(dtype=np.float32)
    before = copies(parameters)
    moments = tuple(zeros_like_gradients(parameters) for _ in OPTIMIZERS[name].moments)
    for k, W in parameters.items():
        in_moments = tuple(m[f"d{k}"] for m in moments)
        OPTIMIZERS[name].step(W, grads[f"d{k}"], in_moments, np.int64(1), np.float64(0.1), DEFAULTS)
    arrays = [*parameters.values(), *(a for m in moments for a in m.values())]
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}
    assert all(not np.array_equal(before[k], W) for k, W in parameters.items())


def test_bad_settings_are_value_errors_naming_them():
    parameters, grads, v, s = state()
    with pytest.raises(ValueError, match="t must be"):
        update_parameters_with_adam(parameters, grads, v, s, 0, LEARNING_RATE)
    with pytest.raises(ValueError, match="t must be"):
        update_parameters_with_rmsprop(parameters, grads, s, 1.5, LEARNING_RATE)
    with pytest.raises(ValueError, match="beta2"):
        update_parameters_with_adam(parameters, grads, v, s, 1, LEARNING_RATE, beta2=1.0)
    with pytest.raises(ValueError, match="beta"):
        update_parameters_with_momentum(parameters, grads, v, -0.1, LEARNING_RATE)
    with pytest.raises(ValueError, match="epsilon"):
        update_parameters_with_adam(parameters, grads, v, s, 1, LEARNING_RATE, epsilon=0.0)


@pytest.mark.parametrize(
    ("name", "decay_rate", "expected"),
    [
        ("none", 0.5, [0.2, 0.2, 0.2, 0.2]),
        ("inverse_time", 0.5, [0.2, 0.2 / 1.5, 0.2 / 2, 0.2 / 2.5]),
        ("inverse_time", 0.0, [0.2, 0.2, 0.2, 0.2]),
        ("exponential", 0.95, [0.2, 0.2 * 0.95, 0.2 * 0.9025, 0.2 * 0.857375]),
        ("exponential", 1.0, [0.2, 0.2, 0.2, 0.2]),
    ],
)
def test_learning_rate_decay_values(name, decay_rate, expected):
    check_lr_decay(name, decay_rate)
    rates = [LR_DECAYS[name](0.2, epoch, decay_rate) for epoch in range(4)]
    assert all(type(rate) is float for rate in rates)
    assert rates == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("name", "decay_rate", "message"),
    [
        ("linear", 0.1, "lr_decay must be one of none, inverse_time, exponential"),
        ("inverse_time", -0.1, "decay_rate must be a finite number >= 0"),
        ("exponential", 0.0, r"decay_rate must be in \(0, 1\]"),
        ("exponential", 1.5, r"decay_rate must be in \(0, 1\]"),
    ],
)
def test_bad_decay_is_a_value_error_naming_it(name, decay_rate, message):
    with pytest.raises(ValueError, match=message):
        check_lr_decay(name, decay_rate)
