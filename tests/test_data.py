"""Data sets by name: shapes (n_x, m), label encoding, the stratified three-way split, scaling
on the training part only, and val_size=0 as the two-way split of before, bit for bit."""

import shutil
import subprocess
import types

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn import datasets as sk_datasets

from pipeline.job import data
from pipeline.job.config import DatasetConfig
from tests.helpers import BEFORE_VALIDATION, ROOT


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
    assert d.X_train.shape[0] == d.X_val.shape[0] == d.X_test.shape[0] == n_x
    assert d.Y_train.shape == (n_y, d.X_train.shape[1])
    assert d.Y_val.shape == (n_y, d.X_val.shape[1])
    assert d.Y_test.shape == (n_y, d.X_test.shape[1])
    if n_y > 1:  # one-hot columns
        assert (d.Y_train.sum(axis=0) == 1).all()
    assert set(np.unique(d.Y_train)) <= {0.0, 1.0}


def test_split_is_stratified_and_scaled_on_train_only():
    d = data.load(dataset(name="iris", test_size=0.2, val_size=0.25), seed=0)
    assert (d.X_train.shape[1], d.X_val.shape[1], d.X_test.shape[1]) == (90, 30, 30)
    np.testing.assert_array_equal(d.Y_train.sum(axis=1), [30, 30, 30])
    np.testing.assert_array_equal(d.Y_val.sum(axis=1), [10, 10, 10])
    np.testing.assert_array_equal(d.Y_test.sum(axis=1), [10, 10, 10])
    np.testing.assert_allclose(d.X_train.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(d.X_train.std(axis=1), 1, atol=1e-12)
    for part in (d.X_val, d.X_test):  # the held-out parts were not fitted
        assert np.abs(part.mean(axis=1)).max() > 1e-3


@pytest.mark.parametrize(
    ("n_samples", "test_size", "val_size"), [(1000, 0.25, 0.2), (333, 0.3, 0.15), (50, 0.2, 0.1)]
)
def test_three_disjoint_stratified_parts_of_the_configured_sizes(n_samples, test_size, val_size):
    d = data.load(dataset(n_samples=n_samples, test_size=test_size, val_size=val_size), seed=2)
    parts = {
        "train": (d.X_train, d.Y_train),
        "val": (d.X_val, d.Y_val),
        "test": (d.X_test, d.Y_test),
    }
    sizes = tuple(X.shape[1] for X, _ in parts.values())
    assert sizes == data.split_sizes(n_samples, test_size, val_size)
    for X, Y in parts.values():  # moons has two equal classes: each part about half each
        assert abs(Y.sum() - X.shape[1] / 2) <= 1
    # The three parts are the whole data set, each point once, under one affine map: the
    # scaler fitted on the training part (mean 0, std 1) and applied to the other two.
    x, _ = sk_datasets.make_moons(n_samples=n_samples, noise=0.2, random_state=2)
    every = np.hstack([X for X, _ in parts.values()]).T
    assert len(np.unique(every, axis=0)) == n_samples  # disjoint
    scale = x.std(axis=0) / every.std(axis=0)
    restored = every * scale + (x.mean(axis=0) - every.mean(axis=0) * scale)
    np.testing.assert_allclose(np.unique(restored, axis=0), np.unique(x, axis=0), atol=1e-9)
    np.testing.assert_allclose(d.X_train.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(d.X_train.std(axis=1), 1, atol=1e-12)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git and the project's history")
@pytest.mark.parametrize("name", ["moons", "iris", "digits"])
def test_val_size_zero_is_the_two_way_split_of_before_bit_for_bit(name):
    """pipeline/job/data.py as it was before the validation split, from git, against today's."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_VALIDATION}:pipeline/data.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if source.returncode != 0:
        pytest.skip(f"the commit before validation is not in this clone: {source.stderr}")
    before = types.ModuleType("data_before_validation")
    exec(compile(source.stdout, "data_before_validation.py", "exec"), before.__dict__)
    old = before.load(dataset(name=name, n_samples=300), seed=4)
    new = data.load(dataset(name=name, n_samples=300, val_size=0.0), seed=4)
    assert new.X_val is None and new.Y_val is None
    for key in ("X_train", "Y_train", "X_test", "Y_test"):
        a, b = getattr(old, key), getattr(new, key)
        assert a.dtype == b.dtype and a.flags.c_contiguous == b.flags.c_contiguous
        np.testing.assert_array_equal(a, b, strict=True)


def test_same_seed_same_data_and_dtype():
    a = data.load(dataset(), seed=3, dtype="float32")
    b = data.load(dataset(), seed=3, dtype="float32")
    c = data.load(dataset(), seed=4, dtype="float32")
    assert a.X_train.dtype == a.Y_train.dtype == np.float32
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.X_train, c.X_train)
