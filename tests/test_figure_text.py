"""Every figure of a sweep shows all of its text: no label, tick, title or legend lies
outside the canvas, at a sweep's real shapes (one depth, several, a search's many values)."""

import itertools

import numpy as np
import pandas as pd
import pytest

from pipeline.store import plots, sweep_plots
from pipeline.sweeps import importance
from tests.helpers import outside_the_canvas

RATES = [0.01, 0.1, 1.0]


def sweep_table(depths, widths=(4, 16, 64), rates=RATES) -> pd.DataFrame:
    rows = [
        {
            "run": f"d{d}-w{w}-lr{r:g}",
            "run_id": f"{d}-{w}-{r}",
            "depth": d,
            "width": w,
            "learning_rate": r,
            "activation": "relu",
            "status": "FINISHED",
            "val_accuracy": 0.5 + 0.4 * (r == 1.0) + 0.01 * d,
            "test_accuracy": 0.8,
        }
        for d, w, r in itertools.product(depths, widths, rates)
    ]
    return pd.DataFrame(rows)


def curves(table: pd.DataFrame) -> dict:
    steps = list(range(0, 1001, 50))
    return {
        row.run_id: (steps, [0.65 * np.exp(-row.learning_rate * s / 200) + 0.04 for s in steps])
        for row in table.itertuples()
    }


def sweep_figures():
    one_depth, depths = sweep_table([2]), sweep_table([1, 2, 3])
    search = sweep_table([0, 3], widths=(2, 128), rates=list(np.geomspace(1e-3, 3, 12)))
    by_name = {
        row.run: curve
        for row, curve in zip(depths.itertuples(), curves(depths).values(), strict=True)
    }
    ratios = pd.DataFrame(
        {
            "depth": [2, 6, 10] * 2,
            "activation": ["sigmoid"] * 3 + ["relu"] * 3,
            "ratio": [1.3e-1, 2.7e-4, 4.8e-6, 0.49, 0.55, 4.1],
        }
    )
    frame = depths.rename(
        columns={
            "depth": "model.depth",
            "width": "model.width",
            "learning_rate": "train.learning_rate",
        }
    )
    knobs = [
        importance.Swept(key, frame[key], importance.distribution(frame[key], False))
        for key in ("model.depth", "model.width", "train.learning_rate")
    ]
    numeric, log = [k.key for k in knobs], ["model.width", "train.learning_rate"]
    return {
        "report cost_curves.png, one depth": plots.curves_by_depth(one_depth, curves(one_depth)),
        "report cost_curves.png, three depths": plots.curves_by_depth(depths, curves(depths)),
        "report cost_curves.png, a search": plots.curves_by_depth(search, curves(search)),
        "accuracy_heatmap.png": plots.accuracy_heatmaps(depths),
        "accuracy_heatmap.png, a search": plots.accuracy_heatmaps(search),
        "parent cost_curves.png": plots.overlaid_curves(by_name, "train cost of every job"),
        "dynamics_by_depth.png": plots.gradient_ratio_by_depth(ratios),
        "importance.png": sweep_plots.importance_bars(
            {"train.learning_rate": 0.85, "model.depth": 0.1, "model.width": 0.05}, "fANOVA"
        ),
        "marginals.png": sweep_plots.marginals(importance.marginals(frame, knobs), numeric, log),
        "pairs.png": sweep_plots.pair_heatmaps(importance.pairs(frame, knobs)),
        "curves.png": sweep_plots.every_run_curves(
            {"train_cost": by_name, "val_cost": by_name}, "d2-w16-lr1"
        ),
    }


@pytest.mark.parametrize("name", list(sweep_figures()))
def test_no_text_of_a_sweeps_figure_lies_outside_its_canvas(name):
    assert outside_the_canvas(sweep_figures()[name]) == [0, 0, 0, 0]
