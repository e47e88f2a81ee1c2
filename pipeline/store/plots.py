"""matplotlib figures a person would rather look at than read.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot): no global
state, no GUI backend, safe in parallel workers. Margins are fixed rather than computed
by a layout engine, which would draw every figure twice (~0.1 s a figure per job).

A job's two figures are built once per process and drawn again with each job's data
(jobs run one at a time in a process): building a figure, with its axes, ticks and
legend, costs a third of a job's plotting.
"""

import functools
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.nn import predict

MAX_PANELS = 5  # more distinct learning rates than this (a search): one colour scale


def save_png(fig: Figure, path) -> None:
    """PNG with light compression: a third of the encoding time, slightly larger files."""
    fig.savefig(path, pil_kwargs={"compress_level": 1})


def laid_out(width: float, height: float) -> Figure:
    """A figure placed by matplotlib's constrained layout, which draws it twice but keeps every
    label, tick and legend inside the canvas: for a sweep's figures, drawn once a sweep."""
    return Figure(figsize=(width, height), layout="constrained")


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.2 / width, bottom=0.5 / height, top=0.9)
    ax = fig.add_subplot()
    ax.locator_params(nbins=4)  # each tick is several artists: a third of a small plot's time
    return fig, ax


CURVE_LABELS = {"train_cost": "train", "val_cost": "validation", "test_cost": "test"}


@functools.cache
def _cost_axes(names: tuple[str, ...]):
    _, ax = _figure(6, 4)
    for name, style in zip(names, ["-", "--", ":"], strict=False):
        ax.plot([], [], label=CURVE_LABELS.get(name, name), linestyle=style)
    ax.set(xlabel="iteration", ylabel="cost J")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def cost_curves(steps: Sequence[int], curves: Mapping[str, Sequence[float]], title: str):
    """Each cost curve (train_cost, and val_cost or test_cost) against iteration.

    The figure is this process's, drawn again at the next call: save it before."""
    ax = _cost_axes(tuple(curves))
    for line, values in zip(ax.lines, curves.values(), strict=False):
        line.set_data(steps, values)
    ax.relim()
    ax.autoscale_view()
    ax.set_title(title)
    return ax.figure


@functools.cache
def _boundary_axes():
    _, ax = _figure(5, 5)
    # an image of the regions: 3x cheaper than contourf
    ax.imshow([[0]], origin="lower", aspect="auto", alpha=0.3, cmap="coolwarm")
    ax.scatter([], [], c=[], s=8, cmap="coolwarm", edgecolors="none")
    ax.set(xlabel="x1", ylabel="x2")
    return ax


def decision_boundary(X, labels, parameters, activation: str, title: str, grid: int = 100):
    """Predicted class over the plane of a 2-feature data set, with the points on top.

    The figure is this process's, drawn again at the next call: save it before."""
    pad = 0.5
    x0 = np.linspace(X[0].min() - pad, X[0].max() + pad, grid)
    x1 = np.linspace(X[1].min() - pad, X[1].max() + pad, grid)
    g0, g1 = np.meshgrid(x0, x1)
    plane = np.vstack([g0.ravel(), g1.ravel()]).astype(X.dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # as in training: saturated weights
        regions = predict(plane, parameters, hidden_activation=activation).reshape(g0.shape)
    ax = _boundary_axes()
    (image,), (points,) = ax.images, ax.collections
    image.set_data(regions)
    image.set_extent((x0[0], x0[-1], x1[0], x1[-1]))  # also the axes' limits
    points.set_offsets(X.T)
    points.set_array(labels)
    for mappable in (image, points):
        mappable.autoscale()  # the colours' range: this job's classes
    ax.set_title(title)
    return ax.figure


def overlaid_curves(curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str):
    """Many runs' cost curves on one log-scaled axis, one line each."""
    fig = laid_out(8, 5)
    ax = fig.add_subplot()
    for label, (steps, values) in curves.items():
        ax.plot(steps, values, label=label, linewidth=1)
    ax.set(xlabel="iteration", ylabel="train cost J", title=title, yscale="log")
    plain_log_ticks(ax.yaxis)
    if 0 < len(curves) <= 30:
        ax.legend(fontsize="x-small", ncols=2)
    ax.grid(alpha=0.3)
    return fig


def curves_by_depth(table, curves: dict[str, tuple[Sequence[int], Sequence[float]]]):
    """Every run's train cost, one panel per depth: colour = learning rate, style = width.

    ``table`` has one row per run (run_id, depth, width, learning_rate, status);
    ``curves`` maps run_id to (steps, costs). A failed run ends with an x. A search, with
    many learning rates and widths, gets a colour scale and solid lines instead of legends.
    """
    depths, widths = sorted(table.depth.unique()), sorted(table.width.unique())
    rates = sorted(table.learning_rate.unique())
    norm = matplotlib.colors.LogNorm(min(rates), max(rates) * 1.001)
    colours = {rate: matplotlib.colormaps["viridis"](0.85 * norm(rate)) for rate in rates}
    few_widths = len(widths) <= 4
    styles = {w: ["-", "--", ":", "-."][i] if few_widths else "-" for i, w in enumerate(widths)}
    colour_scale = len(rates) > MAX_PANELS
    fig = laid_out(4 * len(depths) + 1, 4.2)
    axes = fig.subplots(1, len(depths), sharey=True, squeeze=False)[0]
    for ax, depth in zip(axes, depths, strict=True):
        for row in table[table.depth == depth].itertuples():
            steps, costs = curves.get(row.run_id, ([], []))
            colour = colours[row.learning_rate]
            ax.plot(steps, costs, styles[row.width], color=colour, linewidth=1.2)
            if row.status != "FINISHED" and len(steps):
                ax.plot(steps[-1], costs[-1], "x", color=colour, markersize=8)
        ax.set(title=f"depth {depth}", xlabel="iteration", yscale="log")
        plain_log_ticks(ax.yaxis)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("train cost J")
    handles = []
    if not colour_scale:
        handles += [Line2D([], [], color=colours[r], label=f"lr {r:g}") for r in rates]
    else:
        scale = matplotlib.cm.ScalarMappable(norm, matplotlib.colormaps["viridis"])
        fig.colorbar(scale, ax=axes.tolist(), label="learning rate", fraction=0.03)
    if few_widths:
        handles += [
            Line2D([], [], color="grey", linestyle=styles[w], label=f"width {w}") for w in widths
        ]
    if handles:
        fig.legend(
            handles=handles, loc="outside upper center", ncols=min(len(handles), 4), frameon=False
        )
    return fig


ACCURACY_LABELS = {"val_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}


def accuracy_heatmaps(table, metric: str = "val_accuracy"):
    """``metric`` (a column of ``table``) over depth x width, one panel per learning rate,
    on one colour scale.

    With more learning rates than MAX_PANELS (a search), one panel: the best over all.
    """
    depths, widths = sorted(table.depth.unique()), sorted(table.width.unique())
    rates = sorted(table.learning_rate.unique())
    panels = [(f"learning rate {r:g}", table[table.learning_rate == r]) for r in rates]
    if len(panels) > MAX_PANELS:
        panels = [("best over all learning rates", table)]
    low, high = table[metric].min(), table[metric].max()
    norm = matplotlib.colors.Normalize(low if low < high else high - 0.01, high)
    width_in = 3.6 * len(panels) + 1 + 0.3 * max(0, len(widths) - 4)
    fig = laid_out(width_in, 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, runs) in zip(axes, panels, strict=True):
        grid = runs.pivot_table(
            index="depth", columns="width", values=metric, aggfunc="max"
        ).reindex(index=depths, columns=widths)
        ran = set(zip(runs.depth, runs.width, strict=True))
        image = ax.imshow(grid.to_numpy(dtype=float), norm=norm, cmap="viridis", origin="lower")
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if (depths[i], widths[j]) in ran:  # a run with no accuracy has failed
                label = "failed" if np.isnan(value) else f"{value:.3f}"
                dark = not np.isnan(value) and norm(value) < 0.6  # blank cell: black text
                color = "white" if dark else "black"
                ax.text(j, i, label, ha="center", va="center", fontsize=8, color=color)
        ax.set(title=title, xlabel="width", ylabel="depth", aspect="auto")
        ax.set_xticks(range(len(widths)), widths)
        ax.set_yticks(range(len(depths)), depths)
    fig.colorbar(image, ax=axes.tolist(), label=ACCURACY_LABELS.get(metric, metric), fraction=0.03)
    return fig


def log_ticks(ax) -> None:
    """A few labelled decades on the log-scaled y axis, no minor ticks: a log axis' many
    minor ticks and their labels would cost most of the figure's drawing time."""
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(numticks=6))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_formatter(matplotlib.ticker.LogFormatter())  # 1e-05: no mathtext


def plain_log_ticks(axis) -> None:
    """A log-scaled ``axis`` (ax.xaxis, ax.yaxis) labelled at 1, 2 and 5 of each decade in
    plain numbers (0.05, 0.1, 0.2), no minor ticks: mathtext's 2x10^-1 labels of a narrow log
    axis are wide, and each costs a few ms to draw."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0), numticks=12))
    axis.set_minor_locator(matplotlib.ticker.NullLocator())
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))


LAYER_COLOURS = "viridis"  # sequential: the first layer dark, the last light
MAX_LAYER_LEGEND = 8  # more layers than this: a colour bar instead of a legend


def layer_colours(n_layers: int) -> list:
    """One colour per layer, from the first to the last along LAYER_COLOURS."""
    cmap = matplotlib.colormaps[LAYER_COLOURS]
    return [cmap(0.9 * l / max(1, n_layers - 1)) for l in range(n_layers)]


@functools.cache
def _dynamics_axes(n_layers: int):
    width = 7.0
    fig, ax = _figure(width, 4)
    fig.subplots_adjust(right=1 - 1.2 / width)  # the legend or colour bar, right of the axes
    colours = layer_colours(n_layers)
    for l, colour in enumerate(colours, start=1):
        ax.plot([], [], color=colour, linewidth=1.2, label=f"W{l}")
    ax.set(xlabel="iteration", ylabel="gradient norm ||dW[l]||", yscale="log")
    log_ticks(ax)
    ax.grid(alpha=0.3)
    if n_layers <= MAX_LAYER_LEGEND:
        fig.legend(loc="center right", title="layer", fontsize="small", frameon=False)
    else:
        norm = matplotlib.colors.BoundaryNorm(np.arange(0.5, n_layers + 1), n_layers)
        cmap = matplotlib.colors.ListedColormap(colours)  # one band per layer
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, fraction=0.04)
        bar.set_label("layer l (first to last)")
    return ax


def layer_gradients(steps: Sequence[int], grad_norms: Mapping[str, Sequence[float]], title: str):
    """Each layer's gradient norm (``grad_norms``: {"W1": norms, ...}, first layer first)
    against iteration, on a log scale, coloured from the first layer to the last.

    The figure is this process's, drawn again at the next call: save it before."""
    ax = _dynamics_axes(len(grad_norms))
    for line, norms in zip(ax.lines, grad_norms.values(), strict=True):
        shown = np.asarray(norms, dtype=float)
        line.set_data(steps, np.where(np.isfinite(shown) & (shown > 0), shown, np.nan))
    ax.relim()
    ax.autoscale_view()
    ax.set_title(f"{title}: gradient norm per layer")
    return ax.figure


def gradient_ratio_by_depth(table):
    """The first layer's gradient norm over the last layer's at the first logged point,
    against depth, one line per hidden activation (log scale): where gradients vanish.

    ``table`` has one row per run (depth, activation, ratio); a line goes through the
    median of each depth's runs, its band spans their range (other widths, learning rates).
    """
    width = 7.0
    fig, ax = _figure(width, 4.2)
    fig.subplots_adjust(right=1 - 1.4 / width, top=0.86)  # the legend, right of the axes
    shown = table[np.isfinite(table.ratio) & (table.ratio > 0)]
    for activation, runs in shown.groupby("activation", sort=True):
        by_depth = runs.groupby("depth").ratio
        depths = by_depth.median().index.to_numpy()
        (line,) = ax.plot(depths, by_depth.median(), "o-", label=activation)
        if (by_depth.size() > 1).any():
            low, high = by_depth.min(), by_depth.max()
            ax.fill_between(depths, low, high, color=line.get_color(), alpha=0.15)
    ax.axhline(1, color="grey", linewidth=0.8, linestyle=":")  # as large in both layers
    ax.set(xlabel="depth (hidden layers)", ylabel="||dW[1]|| / ||dW[L]|| at step 0", yscale="log")
    ax.set_title("first layer's gradient over the last's, at initialization")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.legend(loc="center right", title="activation", fontsize="small", frameon=False)
    return fig
