"""A job's figures, built once per process and drawn again for each job."""

import io

import numpy as np
import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf

from pipeline.job import data
from pipeline.job.config import DatasetConfig
from pipeline.job.loop import layer_dims, train
from pipeline.store import plots

MOONS = (DatasetConfig(n_samples=300), 2, 0.5, 300)
OTHERS = [
    (DatasetConfig(name="blobs", n_features=2, n_classes=3, noise=2.0), 3, 0.3, 500),
    (DatasetConfig(name="circles", val_size=0), 1, 2.0, 120),  # curves: train and test
]


def pixels(figure) -> np.ndarray:
    png = io.BytesIO()
    plots.save_png(figure, png)
    return imread(io.BytesIO(png.getvalue()))


def draw_job(dataset: DatasetConfig, depth: int, learning_rate: float, iterations: int):
    """The job's two figures, as pixels, and the axes they were drawn on."""
    d = data.load(OmegaConf.structured(dataset), seed=0)
    dims = layer_dims(d.n_x, depth, 8, d.n_y)
    result = train(d, dims, learning_rate=learning_rate, iterations=iterations, log_every=10)
    labels = d.Y_train.argmax(axis=0) if d.n_y > 1 else d.Y_train[0]
    title = f"{dataset.name} d{depth}"
    figures = (
        plots.cost_curves(result.steps, result.curves, title),
        plots.decision_boundary(d.X_train, labels, result.parameters, "relu", title),
    )
    return [pixels(f) for f in figures], [f.axes[0] for f in figures], d, result


@pytest.mark.parametrize("other", OTHERS)
def test_a_job_drawn_after_another_job_looks_as_before_it(other):
    first = draw_job(*MOONS)[0]
    between = draw_job(*other)[0]  # other limits, classes, curves and title
    again = draw_job(*MOONS)[0]
    for before, after, others in zip(first, again, between, strict=True):
        assert before.shape != others.shape or np.any(before != others)
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("other", OTHERS)
def test_a_figure_drawn_again_has_this_jobs_limits_colours_and_title(other):
    draw_job(*other)
    _, (cost, boundary), d, result = draw_job(*MOONS)

    def with_margins(low, high):  # matplotlib's default 5% on each side
        return low - 0.05 * (high - low), high + 0.05 * (high - low)

    values = np.concatenate(list(result.curves.values()))
    np.testing.assert_allclose(cost.get_xlim(), with_margins(0, result.steps[-1]))
    np.testing.assert_allclose(cost.get_ylim(), with_margins(values.min(), values.max()))
    assert [line.get_label() for line in cost.lines] == ["train", "validation"]
    extent = [d.X_train[0].min() - 0.5, d.X_train[0].max() + 0.5]
    extent += [d.X_train[1].min() - 0.5, d.X_train[1].max() + 0.5]
    np.testing.assert_allclose(boundary.images[0].get_extent(), extent)
    np.testing.assert_allclose([*boundary.get_xlim(), *boundary.get_ylim()], extent)
    assert boundary.images[0].get_clim() == boundary.collections[0].get_clim() == (0, 1)
    assert cost.get_title() == boundary.get_title() == "moons d2"
