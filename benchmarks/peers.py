"""The peer both the epoch and the sweep benchmarks compare against: scikit-learn's
MLPClassifier doing what our network does, full-batch gradient descent (SGD over the whole
training part, no momentum, no L2, no shuffling, no early stop)."""


def full_batch_sgd(hidden: tuple[int, ...], m: int, learning_rate: float, epochs: int):
    """An MLPClassifier training ``epochs`` full-batch steps of ``m`` samples."""
    from sklearn.neural_network import MLPClassifier  # in the job, as a naive peer imports it

    return MLPClassifier(
        hidden_layer_sizes=hidden,
        solver="sgd",
        batch_size=m,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        learning_rate_init=learning_rate,
        max_iter=epochs,
        n_iter_no_change=epochs + 1,
        shuffle=False,
        random_state=0,
    )
