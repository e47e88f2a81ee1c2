"""Mini-batches and Adam: their cost per epoch and per step, and an Adam epoch against
scikit-learn's.

    digits (1,797 examples, 64 features, standardised), dims = [64, 16, 16, 10] (ReLU,
    softmax), float64, one BLAS thread.

Printed, each a median over interleaved rounds so that all contenders see the same machine:
  (a) one epoch of mini-batch gradient descent (batch 64: 29 updates) over one full-batch
      epoch as the training loop runs it today (forward, cost, backward, update);
  (b) one Adam update over one plain gradient-descent update, both as the mini-batch epoch
      makes them (the whole network packed in one vector), and both as the course's
      functions make them, one W[l] and b[l] at a time;
  (c) one Adam epoch of batch 64 (mini_batch_epoch, lambd = 1e-4) over scikit-learn's
      MLPClassifier(solver="adam", batch_size=64, alpha=1e-4) on the same data and network,
      same learning rate, betas and epsilon (target <= 0.45). scikit-learn's epoch is
      (t(fit with 1 + n epochs) - t(fit with 1)) / n: fit()'s one-off set-up taken out,
      its ConvergenceWarning silenced, n_iter_no_change above n so that it runs all n.
      Beside it, the same epoch by the course's functions composed (random_mini_batches,
      L_model_forward, L_model_backward, update_parameters_with_adam), the plain loop.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from pipeline.nn import (
    OPTIMIZERS,
    L_model_backward,
    L_model_forward,
    MiniBatchTraining,
    compute_cost,
    initialize_adam,
    initialize_parameters_deep,
    mini_batch_epoch,
    random_mini_batches,
    update_parameters,
    update_parameters_with_adam,
)
from pipeline.nn.optimizers import DEFAULTS
from pipeline.processes.settings import keep_freed_memory

HIDDEN = (16, 16)
BATCH = 64
LEARNING_RATE = 0.001  # scikit-learn's learning_rate_init
ALPHA = 1e-4  # scikit-learn's L2 default, our lambd (both divide by the batch's size)


def digits():
    """(x, y) for scikit-learn, (X, Y) of shape (64, m) and one-hot (10, m) for us."""
    x, y = load_digits(return_X_y=True)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1)
    return x, y, np.ascontiguousarray(x.T), np.eye(10)[:, y]


def full_batch_epochs(X, Y, parameters, n):
    """Seconds per full-batch epoch, caches reused, as the training loop runs it."""
    caches = None
    start = time.perf_counter()
    for _ in range(n):
        AL, caches = L_model_forward(X, parameters, reuse=caches)
        compute_cost(AL, Y)
        update_parameters(parameters, L_model_backward(AL, Y, caches), LEARNING_RATE)
    return (time.perf_counter() - start) / n


def mini_batch_epochs(training, generator, n):
    """Seconds per mini-batch epoch."""
    start = time.perf_counter()
    for _ in range(n):
        mini_batch_epoch(training, LEARNING_RATE, generator)
    return (time.perf_counter() - start) / n


def course_adam_epochs(X, Y, parameters, generator, n):
    """Seconds per Adam epoch of the course's functions, composed as in its assignment."""
    v, s = initialize_adam(parameters)
    t = 0
    start = time.perf_counter()
    for _ in range(n):
        for X_t, Y_t in random_mini_batches(X, Y, BATCH, generator):
            AL, caches = L_model_forward(X_t, parameters)
            grads = L_model_backward(AL, Y_t, caches, lambd=ALPHA)
            t += 1
            update_parameters_with_adam(parameters, grads, v, s, t, LEARNING_RATE)
    return (time.perf_counter() - start) / n


def timed(function, n):
    start = time.perf_counter()
    for _ in range(n):
        function()
    return (time.perf_counter() - start) / n


def packed_step(training, name):
    """One update of ``training``'s packed vectors by the optimizer ``name``."""
    step = OPTIMIZERS[name].step
    moments = tuple(np.zeros_like(training.theta) for _ in OPTIMIZERS[name].moments)
    args = (training.theta, training.gradient, moments, 1, LEARNING_RATE, DEFAULTS)
    return lambda: step(*args, training.scratch)


def course_steps(parameters, grads):
    """One update by the course's functions, layer by layer: (gd, adam)."""
    v, s = initialize_adam(parameters)
    return (
        lambda: update_parameters(parameters, grads, LEARNING_RATE),
        lambda: update_parameters_with_adam(parameters, grads, v, s, 1, LEARNING_RATE),
    )


def sklearn_fit_seconds(x, y, epochs):
    """Seconds for fit() with ``epochs`` epochs of Adam on batches of 64."""
    model = MLPClassifier(
        hidden_layer_sizes=HIDDEN,
        solver="adam",
        batch_size=BATCH,
        alpha=ALPHA,
        learning_rate_init=LEARNING_RATE,
        beta_1=DEFAULTS.beta1,
        beta_2=DEFAULTS.beta2,
        epsilon=DEFAULTS.epsilon,
        max_iter=epochs,
        n_iter_no_change=epochs + 1,
        random_state=0,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    seconds = time.perf_counter() - start
    assert model.n_iter_ == epochs, (model.n_iter_, epochs)
    return seconds


def sklearn_per_epoch(x, y, epochs):
    """Per-epoch seconds, with fit()'s one-off set-up taken out: (t(1 + n) - t(1)) / n."""
    return (sklearn_fit_seconds(x, y, 1 + epochs) - sklearn_fit_seconds(x, y, 1)) / epochs


def ratio_row(rows, numerator, denominator):
    return statistics.median(row[numerator] / row[denominator] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20, help="epochs per timing")
    parser.add_argument("--steps", type=int, default=2000, help="updates per timing")
    args = parser.parse_args()

    x, y, X, Y = digits()
    dims = [X.shape[0], *HIDDEN, Y.shape[0]]
    parameters = initialize_parameters_deep(dims, seed=0)
    generator = np.random.default_rng(0)
    gd = MiniBatchTraining(X, Y, parameters, mini_batch_size=BATCH, optimizer="gd")
    adam = MiniBatchTraining(X, Y, parameters, mini_batch_size=BATCH, lambd=ALPHA)
    steps = MiniBatchTraining(X, Y, parameters, mini_batch_size=BATCH)
    mini_batch_epoch(steps, LEARNING_RATE, seed=0)  # a real gradient to step with
    full = {key: value.copy() for key, value in parameters.items()}
    course = {key: value.copy() for key, value in parameters.items()}
    AL, caches = L_model_forward(X, full)
    course_gd, course_adam = course_steps(
        {key: value.copy() for key, value in parameters.items()}, L_model_backward(AL, Y, caches)
    )
    timings = {
        "full": lambda: full_batch_epochs(X, Y, full, args.repeat),
        "mini": lambda: mini_batch_epochs(gd, generator, args.repeat),
        "gd_step": lambda: timed(packed_step(steps, "gd"), args.steps),
        "adam_step": lambda: timed(packed_step(steps, "adam"), args.steps),
        "course_gd": lambda: timed(course_gd, args.steps),
        "course_adam": lambda: timed(course_adam, args.steps),
        "adam": lambda: mini_batch_epochs(adam, generator, args.repeat),
        "course": lambda: course_adam_epochs(X, Y, course, generator, args.repeat),
        "sklearn": lambda: sklearn_per_epoch(x, y, args.repeat),
    }

    keep_freed_memory()
    with threadpool_limits(limits=1, user_api="blas"):
        for timing in timings.values():  # warm-up: first touch of every buffer
            timing()
        rows = [{name: timing() for name, timing in timings.items()} for _ in range(args.rounds)]
    ms = {name: 1e3 * statistics.median(row[name] for row in rows) for name in timings}
    us = {name: 1e3 * ms[name] for name in ms}

    print(
        f"digits m={X.shape[1]}, dims={dims}, batch {BATCH}, float64, 1 BLAS thread, "
        f"medians of {args.rounds} rounds"
    )
    print(
        f"(a) mini-batch epoch / full-batch epoch (gd):  {ratio_row(rows, 'mini', 'full'):5.2f}"
        f"   ({ms['mini']:.2f} ms vs {ms['full']:.2f} ms)"
    )
    print(
        f"(b) Adam step / gd step, packed (the epoch's): "
        f"{ratio_row(rows, 'adam_step', 'gd_step'):5.2f}"
        f"   ({us['adam_step']:.1f} us vs {us['gd_step']:.1f} us)"
    )
    print(
        f"    Adam step / gd step, the course's, by layer: "
        f"{ratio_row(rows, 'course_adam', 'course_gd'):5.2f}"
        f"   ({us['course_adam']:.1f} us vs {us['course_gd']:.1f} us)"
    )
    print(
        f"(c) Adam epoch / scikit-learn's Adam epoch:    {ratio_row(rows, 'adam', 'sklearn'):5.2f}"
        f"   ({ms['adam']:.2f} ms vs {ms['sklearn']:.2f} ms)   target <= 0.45"
    )
    print(
        f"    the course's functions composed / scikit-learn: "
        f"{ratio_row(rows, 'course', 'sklearn'):5.2f}   ({ms['course']:.2f} ms)"
    )


if __name__ == "__main__":
    main()
