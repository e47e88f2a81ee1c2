"""A sweep's figures for its page: importance bars, marginals, pair heat maps, every run's
curves.

Drawn once per sweep, so each uses matplotlib's constrained layout (which draws the figure
twice) rather than fixed margins: every label, tick and legend lies inside the canvas,
whatever the values' lengths.
"""

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.store import plots
from pipeline.store.plots import laid_out, save_png

COLUMNS = 3  # panels a row: the page's column is narrow (the MLflow UI's artifact view)
ACCURACY = "validation accuracy"


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes, as ``plots.save_png`` writes it."""
    buffer = io.BytesIO()
    save_png(fig, buffer)
    return buffer.getvalue()


def panels(n: int, height: float = 3.0) -> tuple[Figure, list]:
    """A figure of ``n`` panels, COLUMNS a row; the unused ones hidden."""
    rows = math.ceil(n / COLUMNS)
    columns = min(n, COLUMNS)
    fig = laid_out(3.6 * columns + 0.4, height * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def importance_bars(importances: Mapping[str, float], title: str) -> Figure:
    """One horizontal bar per hyperparameter, the most important on top."""
    keys = list(importances)[::-1]
    fig = laid_out(6, 0.5 * len(keys) + 1.4)
    ax = fig.add_subplot()
    bars = ax.barh(keys, [importances[k] for k in keys], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set(xlim=(0, 1.12), xlabel="importance (sums to 1)", title=title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def marginals(
    by_key: Mapping[str, pd.DataFrame], numeric: Sequence[str], log: Sequence[str]
) -> Figure:
    """For each hyperparameter, the validation accuracy against its values: the mean over
    the other knobs' values, and their range as a band (``by_key``: key -> mean, min, max
    by value)."""
    fig, axes = panels(len(by_key))
    for ax, (key, frame) in zip(axes, by_key.items(), strict=True):
        x = frame.index.to_numpy() if key in numeric else np.arange(len(frame))
        ax.fill_between(x, frame["min"], frame["max"], alpha=0.2, label="range")
        ax.plot(x, frame["mean"], "o-", label="mean")
        if key in log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in frame.index]
        ax.set_xticks(x, labels, rotation=30 if key not in numeric else 0)  # its values
        ax.set(xlabel=key, ylabel=ACCURACY)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig


def pair_heatmaps(pairs: Sequence[tuple[str, str, pd.DataFrame]]) -> Figure:
    """For each pair of hyperparameters, the mean validation accuracy over their values, on
    one colour scale; a blank cell: no finished run there."""
    grids = [grid.to_numpy(dtype=float) for _, _, grid in pairs]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids])
    low, high = finite.min(), finite.max()
    norm = matplotlib.colors.Normalize(low if low < high else high - 0.01, high)
    fig, axes = panels(len(pairs), height=3.3)
    for ax, (rows, columns, grid), values in zip(axes, pairs, grids, strict=True):
        image = ax.imshow(values, norm=norm, cmap="viridis", origin="lower", aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                dark = norm(value) < 0.6
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
        ax.set_xticks(
            range(len(grid.columns)),
            [f"{v:g}" if isinstance(v, float) else str(v) for v in grid.columns],
            rotation=30,
        )
        ax.set_yticks(
            range(len(grid.index)),
            [f"{v:g}" if isinstance(v, float) else str(v) for v in grid.index],
        )
        ax.set(xlabel=columns, ylabel=rows)
    fig.colorbar(image, ax=axes, label=f"mean {ACCURACY}", shrink=0.8)
    return fig


CURVES = {"train_cost": "train cost J", "val_cost": "validation cost J"}


def every_run_curves(
    curves: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]], best: str | None
) -> Figure:
    """Each run's train and validation cost against the iteration, one panel each (log
    scale), the best run (``best``, a run name) drawn over the others."""
    shown = {name: by_run for name, by_run in curves.items() if by_run}
    fig = laid_out(4.2 * len(shown) + 0.4, 3.4)
    axes = fig.subplots(1, len(shown), squeeze=False, sharey=True)[0]
    for ax, (name, by_run) in zip(axes, shown.items(), strict=True):
        for run, (steps, values) in by_run.items():
            if run != best:
                ax.plot(steps, values, color="grey", alpha=0.35, linewidth=0.8)
        if best in by_run:
            ax.plot(*by_run[best], color="tab:red", linewidth=1.8, label=f"best: {best}")
            ax.legend(fontsize="small")
        ax.set(xlabel="iteration", title=CURVES.get(name, name), yscale="log")
        plots.plain_log_ticks(ax.yaxis)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cost J")
    return fig
