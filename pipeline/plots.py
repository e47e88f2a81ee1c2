"""matplotlib figures a person would rather look at than read.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot): no global
state, no GUI backend, safe in parallel workers.
"""

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.nn import predict


def cost_curves(steps: Sequence[int], train: Sequence[float], test: Sequence[float], title: str):
    """Train and test cost against iteration."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, train, label="train")
    ax.plot(steps, test, label="test", linestyle="--")
    ax.set(xlabel="iteration", ylabel="cost J", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def decision_boundary(X, labels, parameters, activation: str, title: str, grid: int = 100):
    """Predicted class over the plane of a 2-feature data set, with the points on top."""
    pad = 0.5
    x0 = np.linspace(X[0].min() - pad, X[0].max() + pad, grid)
    x1 = np.linspace(X[1].min() - pad, X[1].max() + pad, grid)
    g0, g1 = np.meshgrid(x0, x1)
    plane = np.vstack([g0.ravel(), g1.ravel()]).astype(X.dtype)
    regions = predict(plane, parameters, hidden_activation=activation).reshape(g0.shape)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.contourf(g0, g1, regions, alpha=0.3, cmap="coolwarm")
    ax.scatter(X[0], X[1], c=labels, s=8, cmap="coolwarm", edgecolors="none")
    ax.set(xlabel="x1", ylabel="x2", title=title)
    return fig


def overlaid_curves(curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str):
    """Many runs' cost curves on one log-scaled axis, one line each."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for label, (steps, values) in curves.items():
        ax.plot(steps, values, label=label, linewidth=1)
    ax.set(xlabel="iteration", ylabel="train cost J", title=title, yscale="log")
    if len(curves) <= 30:
        ax.legend(fontsize="x-small", ncols=2)
    ax.grid(alpha=0.3)
    return fig
