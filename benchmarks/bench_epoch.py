"""One full-batch epoch of the lecture's network against its GEMM floor and scikit-learn.

    dims = [20, 64, 64, 64, 1], m = 20,000 samples, one BLAS thread, float64 and float32.

Printed, each a median over interleaved rounds so that all contenders see the same machine:
  - epoch / GEMM floor: the epoch (forward, cost, backward, update) against its matrix
    products alone, timed with numpy on arrays of the same shapes (target <= 1.25);
  - epoch / scikit-learn: against MLPClassifier(solver="sgd", batch_size=m, momentum=0,
    alpha=0, same layers and learning rate), per epoch (target <= 0.55); beside it
    floor / scikit-learn, the ratio that matrix products alone would reach;
  - peak memory of the epoch above the baseline before it, over the bytes of the
    activations A[1..L] it must keep for the backward pass (target <= 2.0).

The epoch runs as training runs it: caches reused, freed memory kept (keep_freed_memory).
"""

import argparse
import statistics
import time
import tracemalloc
import warnings

import numpy as np
from peers import full_batch_sgd
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from pipeline.nn import (
    L_model_backward,
    L_model_forward,
    compute_cost,
    initialize_parameters_deep,
    update_parameters,
)
from pipeline.processes.settings import keep_freed_memory

DIMS = [20, 64, 64, 64, 1]
LEARNING_RATE = 0.1


def epoch(X, Y, parameters, reuse=None):
    """Forward, cost, backward, update; returns the caches for the next epoch to reuse."""
    AL, caches = L_model_forward(X, parameters, reuse=reuse)
    compute_cost(AL, Y)
    grads = L_model_backward(AL, Y, caches)
    update_parameters(parameters, grads, LEARNING_RATE)
    return caches


def epochs(X, Y, parameters, n):
    """Seconds per epoch over ``n`` epochs, run as the training loop runs them."""
    caches = epoch(X, Y, parameters)
    start = time.perf_counter()
    for _ in range(n):
        caches = epoch(X, Y, parameters, reuse=caches)
    return (time.perf_counter() - start) / n


def gemm_operands(dims, m, dtype, rng):
    """The (left, right) operands of every matrix product in one epoch."""
    pairs = []
    for l in range(1, len(dims)):
        W = rng.standard_normal((dims[l], dims[l - 1])).astype(dtype)
        A_prev = rng.standard_normal((dims[l - 1], m)).astype(dtype)
        dZ = rng.standard_normal((dims[l], m)).astype(dtype)
        pairs.append((W, A_prev))  # Z = W A_prev
        pairs.append((dZ, A_prev.T))  # dW = dZ A_prev^T
        if l > 1:
            pairs.append((W.T, dZ))  # dA_prev = W^T dZ
    return pairs


def gemm_floor(pairs):
    for left, right in pairs:
        # An outer product (inner dimension 1) is fastest by broadcasting, as the epoch does it.
        left @ right if left.shape[1] > 1 else left * right


def timed(function, repeat):
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat


def sklearn_epochs(x, y, dtype, epochs):
    """Seconds for fit() with ``epochs`` epochs of full-batch SGD."""
    model = full_batch_sgd(tuple(DIMS[1:-1]), x.shape[0], LEARNING_RATE, epochs)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x.astype(dtype), y)
    return time.perf_counter() - start


def sklearn_per_epoch(x, y, dtype, epochs):
    """Per-epoch seconds, with fit()'s one-off set-up taken out: (t(1 + n) - t(1)) / n."""
    return (sklearn_epochs(x, y, dtype, 1 + epochs) - sklearn_epochs(x, y, dtype, 1)) / epochs


def peak_memory_ratio(X, Y, parameters, m):
    """Peak of a first epoch (nothing to reuse yet) above the memory in use before it."""
    itemsize = X.dtype.itemsize
    activation_bytes = sum(n * m * itemsize for n in DIMS[1:])
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    epoch(X, Y, parameters)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - baseline) / activation_bytes


def bench_dtype(dtype, m, rounds, repeat):
    x, y = make_classification(n_samples=m, n_features=DIMS[0], random_state=0)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    X, Y = np.ascontiguousarray(x.T, dtype=dtype), y[None, :].astype(dtype)
    parameters = initialize_parameters_deep(DIMS, seed=0, dtype=dtype)
    pairs = gemm_operands(DIMS, m, dtype, np.random.default_rng(0))
    gemm_floor(pairs)  # warm-up: first touch of every buffer
    rows = []
    for _ in range(rounds):
        t_epoch = epochs(X, Y, parameters, repeat)
        t_floor = timed(lambda: gemm_floor(pairs), repeat)
        t_sklearn = sklearn_per_epoch(x, y, dtype, repeat)
        rows.append((t_epoch, t_floor, t_sklearn))
    t_epoch, t_floor, t_sklearn = (statistics.median(column) for column in zip(*rows, strict=True))
    return {
        "epoch_ms": 1e3 * t_epoch,
        "floor_ms": 1e3 * t_floor,
        "sklearn_ms": 1e3 * t_sklearn,
        "vs_floor": statistics.median(e / f for e, f, _ in rows),
        "vs_sklearn": statistics.median(e / s for e, _, s in rows),
        "floor_vs_sklearn": statistics.median(f / s for _, f, s in rows),
        "memory": peak_memory_ratio(X, Y, parameters, m),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=10, help="epochs per timing")
    args = parser.parse_args()

    print(f"epoch of dims={DIMS}, m={args.samples}, 1 BLAS thread, medians of {args.rounds}")
    header = (
        "dtype    epoch ms  floor ms  sklearn ms  epoch/floor  epoch/sklearn  "
        "floor/sklearn  peak mem/acts"
    )
    print(header)
    results = {}
    keep_freed_memory()
    with threadpool_limits(limits=1, user_api="blas"):
        for dtype in (np.float64, np.float32):
            r = results[np.dtype(dtype).name] = bench_dtype(
                dtype, args.samples, args.rounds, args.repeat
            )
            print(
                f"{np.dtype(dtype).name:8} {r['epoch_ms']:8.1f}  {r['floor_ms']:8.1f}  "
                f"{r['sklearn_ms']:10.1f}  {r['vs_floor']:11.2f}  {r['vs_sklearn']:13.2f}  "
                f"{r['floor_vs_sklearn']:13.2f}  "
                f"{r['memory']:13.2f}"
            )
    speedup = results["float64"]["epoch_ms"] / results["float32"]["epoch_ms"]
    print(f"float32 speed-up over float64: {speedup:.2f}x")
    print("targets: epoch/floor <= 1.25, epoch/sklearn <= 0.55, peak mem/acts <= 2.0")


if __name__ == "__main__":
    main()
