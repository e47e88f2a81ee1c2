"""make gradcheck: backpropagation's gradients against centred differences, layer by layer,
for the network a job starts from (pipeline/gradcheck.py, pipeline/nn/gradient_check.py)."""

import numpy as np
import pytest

from pipeline import gradcheck
from pipeline.nn import (
    HIDDEN_ACTIVATIONS,
    initialize_parameters_deep,
    linear_activation_backward,
    linear_backward,
)
from pipeline.nn.gradient_check import (
    THRESHOLD,
    gradient_check_n,
    layer_line,
    sample_coordinates,
    verdict,
)
from tests.helpers import assert_one_error_line, call_main


def report(capsys, *overrides: str) -> tuple[int, list[str]]:
    """(exit code, printed lines) of ``python -m pipeline.gradcheck overrides``, in-process."""
    code = gradcheck.main(list(overrides))
    return code, capsys.readouterr().out.splitlines()


def first_difference(line: str, name: str) -> float:
    """The course's difference a layer's line prints for ``name`` (dW2, db2)."""
    words = line.split()
    return float(words[words.index(name) + 1])


def backward_with(*, no_derivative_at: int | None = None, scale: dict | None = None):
    """L_model_backward with a bug: hidden layer ``no_derivative_at`` takes dZ = dA (its
    g'(Z) forgotten), and each gradient named in ``scale`` is multiplied by its factor."""

    def backward(AL, Y, caches):
        L = len(caches)
        grads = {}
        dA, grads[f"dW{L}"], grads[f"db{L}"] = linear_backward(AL - Y, caches[-1].linear_cache)
        for l in range(L - 1, 0, -1):
            if l == no_derivative_at:
                dA, dW, db = linear_backward(dA, caches[l - 1].linear_cache)
            else:
                dA, dW, db = linear_activation_backward(dA, caches[l - 1])
            grads[f"dW{l}"], grads[f"db{l}"] = dW, db
        for name, factor in (scale or {}).items():
            grads[name] = grads[name] * factor
        return grads

    return backward


@pytest.mark.parametrize("depth", range(6))
@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
def test_every_hidden_activation_passes_at_depths_0_to_5(capsys, activation, depth):
    code, lines = report(capsys, f"model.depth={depth}", f"model.activation={activation}")
    assert code == 0, "\n".join(lines)
    header, *layers, last = lines
    assert "64 of 600 training examples" in header and "float64" in header
    assert [line.split()[:2] for line in layers] == [["layer", str(l)] for l in range(1, depth + 2)]
    assert all(" ok" in line and "FAIL" not in line for line in layers)
    assert last.startswith("passed")


@pytest.mark.parametrize(
    "overrides",
    [
        ["dataset=iris", "model.depth=3", "model.activation=tanh"],  # softmax over 3 classes
        ["dataset=digits", "model.depth=2", "model.activation=relu"],  # 10 classes, 64 features
        ["dataset=digits", "model.depth=4", "model.activation=sigmoid", "train.dtype=float32"],
        ["train.dtype=float32", "model.depth=3", "model.activation=leaky_relu"],
    ],
)
def test_softmax_outputs_and_float32_configs_pass(capsys, overrides):
    code, lines = report(capsys, *overrides)
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith("passed")
    if "train.dtype=float32" in overrides:  # checked in float64: float32 would differ by ~1e-3
        assert "float64 (train.dtype float32)" in lines[0]


def test_a_big_layer_is_a_seeded_sample_and_says_how_many(capsys):
    first = report(capsys, "model.depth=2")
    again = report(capsys, "model.depth=2")
    assert first == again  # the same batch, the same coordinates, the same lines
    assert "(200 of 256)" in first[1][2]  # W2 is 16 x 16
    assert "(all 32)" in first[1][1]
    parameters = initialize_parameters_deep([2, 16, 16, 1], seed=0)
    seed_0 = sample_coordinates(parameters, 200, seed=0)["W2"]
    assert np.array_equal(seed_0, sample_coordinates(parameters, 200, seed=0)["W2"])
    assert not np.array_equal(seed_0, sample_coordinates(parameters, 200, seed=1)["W2"])


def test_a_wrong_backward_pass_fails_naming_its_layer(compose_config):
    cfg = compose_config("model.depth=3", "model.activation=tanh")
    lines, passed = gradcheck.check(cfg, backward=backward_with(no_derivative_at=2))
    assert not passed
    layers = dict(zip(range(1, 5), lines[1:5], strict=True))
    assert "FAIL" in layers[2] and "FAIL" not in layers[3] + layers[4]
    assert lines[-1].startswith("FAILED: layer 2's gradients differ from centred differences")
    assert "look at its backward step" in lines[-1]


def test_a_wrong_output_layer_fails_alone(compose_config):
    cfg = compose_config("model.depth=2")
    lines, passed = gradcheck.check(cfg, backward=backward_with(scale={"db3": 64}))  # no 1/m
    assert not passed
    assert ["FAIL" in line for line in lines[1:4]] == [False, False, True]
    assert lines[-1].startswith("FAILED: layer 3's gradients differ")
    assert "inherit" not in lines[-1]


def test_a_deep_sigmoid_is_checked_again_where_round_off_is_the_cause(capsys):
    code, lines = report(capsys, "model.depth=5", "model.activation=sigmoid")
    assert code == 0
    layer_1 = lines[1]
    assert first_difference(layer_1, "dW1") > THRESHOLD  # the course's eps alone fails it
    assert "round-off: too small for eps=1e-07; at eps=1e-05: dW1" in layer_1
    assert "passed" in lines[-1] and "once checked again" in lines[-1]


def test_round_off_hides_no_bug_in_a_vanishing_layer(compose_config):
    cfg = compose_config("model.depth=5", "model.activation=sigmoid")
    lines, passed = gradcheck.check(cfg, backward=backward_with(scale={"dW1": 1.001}))
    assert not passed
    assert "FAIL" in lines[1]
    assert lines[-1].startswith("FAILED: layer 1's gradients differ")


def test_gradients_below_float64s_resolution_are_said_to_be_too_small(capsys):
    code, lines = report(capsys, "model.depth=5", "model.activation=sigmoid", "model.init=small")
    assert code == 1
    assert "too small to check by centred differences in float64" in lines[-1]
    assert "backward step" not in lines[-1]


def kinked_network(rng, m=8):
    """Random (X, Y, parameters) of a [3, 4, 1] network whose first unit's pre-activation
    is 0 at example 2: a perturbation of W1[0] or b1[0] crosses ReLU's kink there."""
    X = rng.standard_normal((3, m))
    Y = (rng.random((1, m)) < 0.5).astype(float)
    parameters = initialize_parameters_deep([3, 4, 1], seed=1)
    parameters["b1"] += rng.standard_normal((4, 1))
    parameters["b1"][0, 0] = -(parameters["W1"][0] @ X[:, 2])
    return X, Y, parameters


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_relus_kink_is_explained_when_it_is_the_cause(activation):
    X, Y, parameters = kinked_network(np.random.default_rng(0))
    checks = gradient_check_n(parameters, X, Y, hidden_activation=activation)
    layer_1 = layer_line(checks[0])
    assert max(checks[0].measurements[0].dW, checks[0].measurements[0].db) > THRESHOLD
    assert checks[0].passed and checks[0].kinked_examples == 1
    assert "ok: 1 of 8 examples cross ReLU's kink at +-eps; without them: dW1" in layer_1
    assert "kink" not in layer_line(checks[1])
    assert verdict(checks).startswith("passed")


def test_a_kink_hides_no_wrong_gradient():
    X, Y, parameters = kinked_network(np.random.default_rng(0))
    wrong = backward_with(scale={"db1": 2.0})
    checks = gradient_check_n(parameters, X, Y, hidden_activation="relu", backward=wrong)
    assert checks[0].kinked_examples == 1 and not checks[0].passed
    assert "FAIL" in layer_line(checks[0])
    assert verdict(checks).startswith("FAILED: layer 1's gradients differ")


def test_dead_relus_of_a_job_are_explained_as_the_kink(capsys):
    # One ReLU unit per layer: where it is off, the next layer's Z is b = 0 exactly.
    code, lines = report(capsys, "model.depth=2", "model.width=1")
    assert code == 0
    assert first_difference(lines[2], "db2") > THRESHOLD
    assert "examples cross ReLU's kink at +-eps; without them" in lines[2]


def test_the_arrays_given_are_left_as_they_are():
    X, Y, parameters = kinked_network(np.random.default_rng(0))
    before = {name: value.copy() for name, value in parameters.items()}
    float32 = {name: value.astype(np.float32) for name, value in parameters.items()}
    gradient_check_n(parameters, X, Y)
    gradient_check_n(float32, X, Y)
    assert all(np.array_equal(parameters[name], before[name]) for name in before)
    assert all(value.dtype == np.float32 for value in float32.values())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=-1", "model.depth=-1 is invalid: must be >= 0"),
        ("model.dept=3", "model.dept is not a config key"),
        ("dataset=nope", "dataset=nope is invalid: known options:"),
        ("model.activation=gelu", "model.activation='gelu' is invalid"),
        ("model.depth=1,2", "model.depth=1,2 is a sweep: the gradient check is of one network"),
    ],
)
def test_a_bad_override_is_one_line_and_exit_2(capsys, override, message):
    done = call_main(capsys, gradcheck.main, override)
    assert done.returncode == 2
    out, err = done.stdout, done.stderr
    assert out == ""
    assert err.splitlines() == [err.strip()] and err.startswith(f"error: {message}"), err


def test_the_command_line_passes_and_refuses_in_one_line(capsys):
    done = call_main(capsys, gradcheck.main, "model.depth=1", "model.activation=tanh")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("passed")
    assert_one_error_line(call_main(capsys, gradcheck.main, "model.width=0"), "model.width=0")
