"""random_mini_batches and MiniBatches: seeded permutations cut into batches; and the lean
mini-batch epoch: the course's functions composed, bit for bit, allocating no array a batch."""

import tracemalloc

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_moons

from pipeline.nn import (
    HIDDEN_ACTIVATIONS,
    OPTIMIZERS,
    L_model_backward,
    L_model_forward,
    MiniBatchTraining,
    compute_cost,
    initialize_parameters_deep,
    mini_batch_epoch,
    predict,
    random_mini_batches,
)
from pipeline.nn.minibatches import MiniBatches
from pipeline.nn.optimizers import DEFAULTS, update_each, zeros_like_gradients


def numbered(m, n_y=2):
    """X whose column j is (j, -j, 2j) and Y whose column j is (j, j + 0.5, ...)."""
    j = np.arange(m, dtype=float)
    return np.stack([j, -j, 2 * j]), np.stack([j + 0.5 * k for k in range(n_y)])


def columns(batches):
    X = np.concatenate([X_t for X_t, _ in batches], axis=1)
    Y = np.concatenate([Y_t for _, Y_t in batches], axis=1)
    return X, Y


@pytest.mark.parametrize(
    ("m", "size", "sizes"),
    [(150, 64, [64, 64, 22]), (128, 64, [64, 64]), (5, 64, [5]), (7, 1, [1] * 7)],
)
def test_batches_are_a_permutation_cut_in_order_with_a_smaller_last(m, size, sizes):
    X, Y = numbered(m)
    batches = random_mini_batches(X, Y, size, seed=3)
    assert [X_t.shape for X_t, _ in batches] == [(3, n) for n in sizes]
    assert [Y_t.shape for _, Y_t in batches] == [(2, n) for n in sizes]
    shuffled_X, shuffled_Y = columns(batches)
    order = shuffled_X[0].astype(int)
    assert sorted(order) == list(range(m))
    assert np.array_equal(shuffled_X, X[:, order]) and np.array_equal(shuffled_Y, Y[:, order])
    if m > 5:
        assert not np.array_equal(order, np.arange(m))  # shuffled


def test_same_seed_same_batches_another_seed_others_and_global_state_untouched():
    X, Y = numbered(100)
    np.random.seed(5)  # noqa: NPY002 - the global state must stay untouched
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    first, again, other = (random_mini_batches(X, Y, 32, seed) for seed in (7, 7, 8))
    assert np.array_equal(columns(first)[0], columns(again)[0])
    assert not np.array_equal(columns(first)[0], columns(other)[0])
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_minibatches_shuffle_in_place_into_the_same_views_as_the_course_function():
    X, Y = numbered(150, n_y=3)
    minibatches = MiniBatches(X, Y, 64)
    views = minibatches.batches
    for seed in (0, 1, 2):
        batches = minibatches.shuffle(seed)
        assert batches is views
        assert all(np.shares_memory(X_t, minibatches.shuffled[0]) for X_t, _ in batches)
        for (X_t, Y_t), (X_c, Y_c) in zip(
            batches, random_mini_batches(X, Y, 64, seed), strict=True
        ):
            assert np.array_equal(X_t, X_c) and np.array_equal(Y_t, Y_c)
    assert np.array_equal(X, numbered(150)[0])  # the data itself is never shuffled


def test_a_generator_gives_each_epoch_a_new_order_and_each_run_the_same_orders():
    X, Y = numbered(50)

    def orders(seed):
        generator = np.random.default_rng(seed)
        minibatches = MiniBatches(X, Y, 16)
        return [columns(minibatches.shuffle(generator))[0][0].copy() for _ in range(3)]

    run, rerun = orders(11), orders(11)
    assert all(np.array_equal(a, b) for a, b in zip(run, rerun, strict=True))
    assert not np.array_equal(run[0], run[1])


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_bad_mini_batch_size_is_a_value_error_naming_it(size):
    X, Y = numbered(10)
    with pytest.raises(ValueError, match="mini_batch_size"):
        random_mini_batches(X, Y, size)


def test_x_and_y_of_different_m_are_a_value_error():
    X, _ = numbered(10)
    with pytest.raises(ValueError, match=r"shapes \(n_x, m\) and \(n_y, m\)"):
        random_mini_batches(X, np.zeros((1, 9)), 4)


def data(n_out, m, dtype, seed=0, n_x=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_x, m)).astype(dtype)
    y = rng.integers(0, max(n_out, 2), m)
    Y = (y[None] if n_out == 1 else np.eye(n_out)[:, y]).astype(dtype)
    return X, Y


def course_epochs(X, Y, parameters, *, size, activation, optimizer, lambd, epochs):
    """The course's loop: random_mini_batches, forward, backward, one step a batch."""
    moments = [zeros_like_gradients(parameters) for _ in OPTIMIZERS[optimizer].moments]
    t = 0
    for epoch in range(epochs):
        for X_t, Y_t in random_mini_batches(X, Y, size, seed=epoch):
            AL, caches = L_model_forward(X_t, parameters, hidden_activation=activation)
            grads = L_model_backward(AL, Y_t, caches, lambd=lambd)
            t += 1
            update_each(OPTIMIZERS[optimizer].step, parameters, grads, moments, t, 0.01, DEFAULTS)
    return parameters


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
@pytest.mark.parametrize(("n_out", "lambd"), [(1, 0.0), (3, 0.1)])
def test_epoch_is_the_course_functions_composed_bit_for_bit(
    dtype, optimizer, activation, n_out, lambd
):
    X, Y = data(n_out, 150, dtype)
    parameters = initialize_parameters_deep([5, 7, 6, n_out], seed=1, dtype=dtype)
    training = MiniBatchTraining(
        X,
        Y,
        parameters,
        mini_batch_size=32,
        optimizer=optimizer,
        hidden_activation=activation,
        lambd=lambd,
    )
    for epoch in range(3):
        mini_batch_epoch(training, 0.01, seed=epoch)
    expected = course_epochs(
        X, Y, parameters, size=32, activation=activation, optimizer=optimizer, lambd=lambd, epochs=3
    )
    assert training.t == 3 * 5
    assert training.parameters.keys() == expected.keys()
    for key, value in expected.items():
        assert training.parameters[key].dtype == np.dtype(dtype)
        assert np.array_equal(training.parameters[key], value), key
    for views in (training.grads, *training.moments.values()):
        assert {a.dtype for a in views.values()} == {np.dtype(dtype)}


# numpy's ufuncs allocate their own iteration buffer, at most 8192 elements, for every
# broadcasting operation (b added to Z, relu's maximum with a row of zeros): no array of
# ours, and smaller than any array of the network below.
UFUNC_BUFFER = 8192 * np.dtype(np.float64).itemsize


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("activation", sorted(HIDDEN_ACTIVATIONS))
@pytest.mark.parametrize("n_out", [1, 3])
def test_an_epoch_allocates_no_array_of_a_layer_or_of_the_parameters(optimizer, activation, n_out):
    """The epoch's peak memory above its start stays under the smallest array a batch
    could allocate: an A[l] of a hidden layer (96 x 128), a copy of the parameters or of X."""
    m, size, width, n_x = 512, 128, 96, 32
    X, Y = data(n_out, m, np.float64, n_x=n_x)
    parameters = initialize_parameters_deep([n_x, width, width, n_out], seed=0)
    training = MiniBatchTraining(
        X,
        Y,
        parameters,
        mini_batch_size=size,
        optimizer=optimizer,
        hidden_activation=activation,
        lambd=0.1,
    )
    smallest_array = min(width * size, training.theta.size, X.size) * X.itemsize
    generator = np.random.default_rng(0)
    mini_batch_epoch(training, 0.01, generator)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        mini_batch_epoch(training, 0.01, generator)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    permutation = m * np.dtype(np.int64).itemsize
    assert permutation <= peak <= max(permutation, UFUNC_BUFFER) + 4096 < smallest_array


@pytest.mark.parametrize(
    ("optimizer", "learning_rate"), [("momentum", 0.1), ("rmsprop", 0.01), ("adam", 0.01)]
)
def test_mini_batches_learn_moons(optimizer, learning_rate):
    x, y = make_moons(n_samples=400, noise=0.1, random_state=0)
    X, Y = x.T, y[None, :]
    parameters = initialize_parameters_deep([2, 16, 16, 1], seed=0)
    training = MiniBatchTraining(X, Y, parameters, mini_batch_size=32, optimizer=optimizer)
    generator = np.random.default_rng(0)
    start = compute_cost(L_model_forward(X, training.parameters)[0], Y)
    for _ in range(100):
        mini_batch_epoch(training, learning_rate, generator)
    assert compute_cost(L_model_forward(X, training.parameters)[0], Y) < start / 4
    assert (predict(X, training.parameters) == Y).mean() >= 0.95


def test_parameters_are_copied_in_and_trained_in_place_in_the_packed_views():
    x, y = make_blobs(n_samples=60, centers=3, random_state=0)
    parameters = initialize_parameters_deep([2, 4, 3], seed=0)
    before = {k: v.copy() for k, v in parameters.items()}
    training = MiniBatchTraining(x.T, np.eye(3)[:, y], parameters, mini_batch_size=16)
    views = dict(training.parameters)
    mini_batch_epoch(training, 0.1, seed=0)
    assert all(np.array_equal(parameters[k], before[k]) for k in parameters)
    assert all(training.parameters[k] is views[k] for k in views)
    assert all(not np.array_equal(views[k], before[k]) for k in ("W1", "W2"))
    assert training.moments.keys() == {"v", "s"}
    assert training.moments["v"].keys() == {"dW1", "db1", "dW2", "db2"}


def test_bad_inputs_are_value_errors_naming_them():
    X, Y = data(3, 20, np.float64)
    parameters = initialize_parameters_deep([5, 4, 3], seed=0)
    cases = [
        ({"optimizer": "sgd"}, "optimizer must be one of gd, momentum, rmsprop, adam"),
        ({"hidden_activation": "elu"}, "hidden_activation must be one of"),
        ({"lambd": -1.0}, "lambd must be"),
        ({"mini_batch_size": 0}, "mini_batch_size must be >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            MiniBatchTraining(X, Y, parameters, **{"mini_batch_size": 4, **kwargs})
    with pytest.raises(ValueError, match=r"X must have shape \(5, m\)"):
        MiniBatchTraining(X[:4], Y, parameters, mini_batch_size=4)
    with pytest.raises(ValueError, match="one-hot"):
        MiniBatchTraining(X, Y * 2, parameters, mini_batch_size=4)
