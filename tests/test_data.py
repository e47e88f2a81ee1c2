"""Data sets by name: shapes (n_x, m), label encoding, stratified split, scaling on train only."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline import data
from pipeline.config import DatasetConfig


def dataset(**kwargs):
    return OmegaConf.structured(DatasetConfig(**kwargs))


@pytest.mark.parametrize(
    ("name", "n_x", "n_y"),
    [
        ("moons", 2, 1),
        ("circles", 2, 1),
        ("blobs", 2, 3),
        ("classification", 2, 1),
        ("breast_cancer", 30, 1),
        ("iris", 4, 3),
        ("wine", 13, 3),
        ("digits", 64, 10),
    ],
)
def test_shapes_and_labels(name, n_x, n_y):
    n_classes = 3 if name == "blobs" else 2
    d = data.load(dataset(name=name, n_samples=200, n_classes=n_classes), seed=0)
    assert d.X_train.shape[0] == d.X_test.shape[0] == n_x
    assert d.Y_train.shape == (n_y, d.X_train.shape[1])
    assert d.Y_test.shape == (n_y, d.X_test.shape[1])
    if n_y > 1:  # one-hot columns
        assert (d.Y_train.sum(axis=0) == 1).all()
    assert set(np.unique(d.Y_train)) <= {0.0, 1.0}


def test_split_is_stratified_and_scaled_on_train_only():
    d = data.load(dataset(name="iris", test_size=0.2), seed=0)
    assert d.X_train.shape[1] == 120 and d.X_test.shape[1] == 30
    np.testing.assert_array_equal(d.Y_test.sum(axis=1), [10, 10, 10])
    np.testing.assert_allclose(d.X_train.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(d.X_train.std(axis=1), 1, atol=1e-12)
    assert np.abs(d.X_test.mean(axis=1)).max() > 1e-3  # the test part was not fitted


def test_same_seed_same_data_and_dtype():
    a = data.load(dataset(), seed=3, dtype="float32")
    b = data.load(dataset(), seed=3, dtype="float32")
    c = data.load(dataset(), seed=4, dtype="float32")
    assert a.X_train.dtype == a.Y_train.dtype == np.float32
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.X_train, c.X_train)
