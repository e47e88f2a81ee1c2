"""scikit-learn data sets by name, split, standardised and shaped for the network.

X has shape (n_x, m) as on the slides. Y has shape (1, m) for two classes and is
one-hot (K, m) for K >= 3. The data is split into training, validation and test parts,
each split stratified, and the scaler is fitted on the training part only. Every random
draw is seeded from ``seed``.
"""

import math
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


def n_informative(n_features: int) -> int:
    """How many of classification's features carry its classes (scikit-learn makes at most
    2**n_informative classes from them)."""
    return max(2, n_features // 2)


def _classification(datasets, d, seed):
    return datasets.make_classification(
        n_samples=d.n_samples,
        n_features=d.n_features,
        n_informative=n_informative(d.n_features),
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
WITH_N_FEATURES = ("blobs", "classification")  # the other synthetic sets have 2 features
# The bundled sets' (examples, features), so that a config is checked without loading
# scikit-learn (tests compare them with what its loaders return).
BUNDLED_SHAPES = {
    "breast_cancer": (569, 30),
    "iris": (150, 4),
    "wine": (178, 13),
    "digits": (1797, 64),
}


def shape_of(d) -> tuple[int, int]:
    """(examples, features) of the data set ``d`` (a dataset config), without loading it."""
    if d.name in BUNDLED_SHAPES:
        return BUNDLED_SHAPES[d.name]
    return d.n_samples, d.n_features if d.name in WITH_N_FEATURES else 2


def n_classes_of(d) -> int:
    """K, the number of classes the data set ``d`` (a dataset config) will have."""
    fixed = DATASETS[d.name][1]
    return fixed if fixed is not None else d.n_classes


def n_samples_of(d) -> int:
    """m, the number of samples the data set ``d`` (a dataset config) will have."""
    return shape_of(d)[0]


def split_sizes(m: int, test_size: float, val_size: float) -> tuple[int, int, int]:
    """(train, validation, test) sizes of ``m`` samples, as scikit-learn's splits round them:
    the test part first, then ``val_size`` of the rest."""
    n_test = math.ceil(test_size * m)
    n_val = math.ceil(val_size * (m - n_test))
    return m - n_test - n_val, n_val, n_test


@dataclass
class Data:
    X_train: np.ndarray  # (n_x, m_train)
    Y_train: np.ndarray  # (1, m_train) or (K, m_train)
    X_test: np.ndarray
    Y_test: np.ndarray
    n_classes: int
    X_val: np.ndarray | None = None  # None: no validation part (val_size=0)
    Y_val: np.ndarray | None = None

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


def split(d, *, seed: int) -> tuple:
    """The data set named ``d.name`` as (x_train, x_val, x_test, y_train, y_val, y_test): raw
    features of shape (m, n_x) and labels 0..K-1. ``d.test_size`` of it is held out for
    testing, then ``d.val_size`` of the rest for validation (x_val, y_val are None when 0),
    each split stratified and seeded."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader, _ = DATASETS[d.name]
    x, y = loader(datasets, d, seed)
    y = np.unique(y, return_inverse=True)[1]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=d.test_size, stratify=y, random_state=seed
    )
    x_val = y_val = None
    if d.val_size > 0:  # with 0, the two parts above exactly as before validation existed
        x_train, x_val, y_train, y_val = train_test_split(
            x_train, y_train, test_size=d.val_size, stratify=y_train, random_state=seed
        )
    return x_train, x_val, x_test, y_train, y_val, y_test


def training_scaler(d, *, seed: int):
    """The StandardScaler that ``load`` fits on the training part (same data, same seed)."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(split(d, seed=seed)[0])


def load(d, *, seed: int, dtype: str = "float64") -> Data:
    """The data set named ``d.name``, split three ways (``split``), standardised with the
    training part's statistics, as (n_x, m)."""
    from sklearn.preprocessing import StandardScaler

    x_train, x_val, x_test, y_train, y_val, y_test = split(d, seed=seed)
    scaler = StandardScaler().fit(x_train)  # the training part only, as training_scaler
    n_classes = n_classes_of(d)

    def features(part: np.ndarray | None) -> np.ndarray | None:
        return None if part is None else np.ascontiguousarray(scaler.transform(part).T, dtype)

    def labels(part: np.ndarray | None) -> np.ndarray | None:
        return None if part is None else encode_labels(part, n_classes, dtype)

    return Data(
        X_train=features(x_train),
        Y_train=labels(y_train),
        X_test=features(x_test),
        Y_test=labels(y_test),
        n_classes=n_classes,
        X_val=features(x_val),
        Y_val=labels(y_val),
    )
