"""Mini-batches: the m examples shuffled once per epoch, then cut into batches.

    order = a permutation of 0..m-1 drawn from np.random.default_rng(seed)
    batch k = columns order[k*size : (k+1)*size] of X (n_x, m) and of Y (n_y, m)

There are ceil(m / size) batches; the last is smaller when m is not a multiple of size.
``seed`` is an integer or a ``np.random.Generator`` (the global ``np.random`` state is
never read): the same integer gives the same batches, and one Generator passed epoch
after epoch gives each epoch a new order, the same on every run from the same seed.

``random_mini_batches`` is the course's function: new shuffled copies each call.
``MiniBatches`` is the training loop's: it shuffles into buffers allocated once (np.take
with out=), and its batches are views of them that stay valid from epoch to epoch.
Both draw the same order from the same seed, so they give the same batches.
"""

import numpy as np

Seed = int | np.random.Generator
Batch = tuple[np.ndarray, np.ndarray]  # (X_t of shape (n_x, size), Y_t of shape (n_y, size))


def shuffled_order(m: int, seed: Seed) -> np.ndarray:
    """A permutation of range(m), drawn from ``seed``'s generator."""
    return np.random.default_rng(seed).permutation(m)


def batch_slices(m: int, mini_batch_size: int) -> list[slice]:
    """The columns of each batch: [0, size), [size, 2 size), ..., the last up to m."""
    if isinstance(mini_batch_size, bool) or int(mini_batch_size) != mini_batch_size:
        raise ValueError(f"mini_batch_size must be an integer; got {mini_batch_size!r}")
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be >= 1; got {mini_batch_size!r}")
    size = int(mini_batch_size)
    return [slice(k, min(k + size, m)) for k in range(0, m, size)]


def check_examples(X: np.ndarray, Y: np.ndarray) -> int:
    """m, the number of examples (columns) X (n_x, m) and Y (n_y, m) share."""
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X and Y must have shapes (n_x, m) and (n_y, m); got {X.shape} and {Y.shape}"
        )
    return X.shape[1]


def random_mini_batches(
    X: np.ndarray, Y: np.ndarray, mini_batch_size: int = 64, seed: Seed = 0
) -> list[Batch]:
    """[(X_1, Y_1), (X_2, Y_2), ...]: the examples in a random order, mini_batch_size a batch."""
    m = check_examples(X, Y)
    slices = batch_slices(m, mini_batch_size)
    order = shuffled_order(m, seed)
    shuffled_X, shuffled_Y = X[:, order], Y[:, order]
    return [(shuffled_X[:, columns], shuffled_Y[:, columns]) for columns in slices]


class MiniBatches:
    """The batches of X and Y, reshuffled in place each epoch.

    The examples are kept one per row, X^T of shape (m, n_x): shuffling then moves whole
    rows, about 8x faster than gathering every row of X by column. A batch is a view of
    them transposed back, of shape (n_x, size), which matmul reads as it is.
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, mini_batch_size: int) -> None:
        self.m = check_examples(X, Y)
        self.examples = np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T)
        self.shuffled = tuple(np.empty_like(rows) for rows in self.examples)
        shuffled_X, shuffled_Y = self.shuffled
        self.batches: list[Batch] = [
            (shuffled_X[rows].T, shuffled_Y[rows].T)
            for rows in batch_slices(self.m, mini_batch_size)
        ]

    def shuffle(self, seed: Seed) -> list[Batch]:
        """The batches of a new order drawn from ``seed``: the same views, new contents."""
        order = shuffled_order(self.m, seed)
        for rows, shuffled in zip(self.examples, self.shuffled, strict=True):
            # mode="raise" (the default) gathers into a temporary copy before out: a
            # permutation's indices are all valid, so "clip" never clips and copies nothing.
            np.take(rows, order, axis=0, out=shuffled, mode="clip")
        return self.batches
