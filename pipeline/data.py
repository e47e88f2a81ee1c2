"""scikit-learn data sets by name, split, standardised and shaped for the network.

X has shape (n_x, m) as on the slides. Y has shape (1, m) for two classes and is
one-hot (K, m) for K >= 3. The split is stratified and the scaler is fitted on the
training part only. Every random draw is seeded from ``seed``.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# (sklearn.datasets, dataset config, seed) -> (x, y). scikit-learn is imported only when
# data is loaded: a sweep's launcher checks names against DATASETS and saves ~1 s.
Loader = Callable[..., tuple[np.ndarray, np.ndarray]]


def _moons(datasets, d, seed):
    return datasets.make_moons(n_samples=d.n_samples, noise=d.noise, random_state=seed)


def _circles(datasets, d, seed):
    return datasets.make_circles(
        n_samples=d.n_samples, noise=d.noise, factor=0.5, random_state=seed
    )


def _blobs(datasets, d, seed):
    return datasets.make_blobs(
        n_samples=d.n_samples,
        n_features=d.n_features,
        centers=d.n_classes,
        cluster_std=d.noise,
        random_state=seed,
    )


def _classification(datasets, d, seed):
    return datasets.make_classification(
        n_samples=d.n_samples,
        n_features=d.n_features,
        n_informative=max(2, d.n_features // 2),
        n_redundant=0,
        n_classes=d.n_classes,
        n_clusters_per_class=1,
        flip_y=d.noise,
        random_state=seed,
    )


def _bundled(name: str) -> Loader:
    return lambda datasets, d, seed: getattr(datasets, name)(return_X_y=True)


# name -> (loader, number of classes: fixed, or None when the config sets it)
DATASETS: dict[str, tuple[Loader, int | None]] = {
    "moons": (_moons, 2),
    "circles": (_circles, 2),
    "blobs": (_blobs, None),
    "classification": (_classification, None),
    "breast_cancer": (_bundled("load_breast_cancer"), 2),
    "iris": (_bundled("load_iris"), 3),
    "wine": (_bundled("load_wine"), 3),
    "digits": (_bundled("load_digits"), 10),
}
SYNTHETIC = ("moons", "circles", "blobs", "classification")


def n_classes_of(d) -> int:
    """K, the number of classes the data set ``d`` (a dataset config) will have."""
    fixed = DATASETS[d.name][1]
    return fixed if fixed is not None else d.n_classes


@dataclass
class Data:
    X_train: np.ndarray  # (n_x, m_train)
    Y_train: np.ndarray  # (1, m_train) or (K, m_train)
    X_test: np.ndarray
    Y_test: np.ndarray
    n_classes: int

    @property
    def n_x(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_y(self) -> int:
        """Output units: 1 sigmoid unit for two classes, K softmax units otherwise."""
        return self.Y_train.shape[0]


def encode_labels(y: np.ndarray, n_classes: int, dtype: np.dtype) -> np.ndarray:
    """(1, m) of 0/1 for two classes; one-hot (K, m) for K >= 3."""
    if n_classes == 2:
        return y[None, :].astype(dtype)
    return np.eye(n_classes, dtype=dtype)[:, y]


def split(d, *, seed: int) -> tuple[np.ndarray, ...]:
    """The data set named ``d.name`` as x_train, x_test, y_train, y_test: raw features of
    shape (m, n_x), labels 0..K-1, split stratified with ``d.test_size``."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader, _ = DATASETS[d.name]
    x, y = loader(datasets, d, seed)
    y = np.unique(y, return_inverse=True)[1]
    return tuple(train_test_split(x, y, test_size=d.test_size, stratify=y, random_state=seed))


def training_scaler(d, *, seed: int):
    """The StandardScaler that ``load`` fits on the training part (same data, same seed)."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(split(d, seed=seed)[0])


def load(d, *, seed: int, dtype: str = "float64") -> Data:
    """The data set named ``d.name``, split with ``d.test_size``, standardised, as (n_x, m)."""
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = split(d, seed=seed)
    scaler = StandardScaler().fit(x_train)  # the training part only, as training_scaler
    n_classes = n_classes_of(d)
    return Data(
        X_train=np.ascontiguousarray(scaler.transform(x_train).T, dtype=dtype),
        Y_train=encode_labels(y_train, n_classes, dtype),
        X_test=np.ascontiguousarray(scaler.transform(x_test).T, dtype=dtype),
        Y_test=encode_labels(y_test, n_classes, dtype),
        n_classes=n_classes,
    )
