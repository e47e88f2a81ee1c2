"""Learning dynamics per layer: gradient and weight norms at every logged point, from the
gradients backpropagation computes anyway, in real runs read back from a real SQLite store."""

import os
import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.job import data as datasets
from pipeline.job.config import DatasetConfig
from pipeline.job.dynamics import Dynamics
from pipeline.job.loop import cost_on, held_out, layer_dims, train
from pipeline.job.run import run_job
from pipeline.nn import (
    L_model_backward,
    L_model_forward,
    compute_cost,
    initialize_parameters_deep,
    update_parameters,
)
from pipeline.store import plots, tables, tracking
from tests.helpers import ROOT, outside_the_canvas, parents_and_children, run_cli

QUICK = ["train.iterations=60", "train.log_every=10"]
ON = "tracking.dynamics=true"  # off by default: they add a quarter to a default job


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def step_zero(client, run_id: str, key: str) -> float:
    return dict(history(client, run_id, key))[0]


def make_reproduce(uri: str, run_id: str) -> subprocess.CompletedProcess:
    """``make reproduce RUN=<run_id>`` on the store ``uri``, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        ["make", "-s", "reproduce", f"RUN={run_id}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env | {"MLFLOW_TRACKING_URI": uri},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("activation", "init", "vanishes"), [("sigmoid", "xavier", True), ("relu", "he", False)]
)
def test_a_deep_sigmoid_network_shows_its_vanishing_gradient_and_relu_does_not(
    compose_config, store, activation, init, vanishes
):
    uri, client = store
    overrides = [f"model.activation={activation}", f"model.init={init}", "model.depth=6"]
    outcome = run_job(compose_config(f"tracking.uri={uri}", *overrides, *QUICK, ON))
    run_id = outcome.run_id
    first = step_zero(client(), run_id, "grad_norm/W1")
    last = step_zero(client(), run_id, "grad_norm/W7")
    assert (first * 100 <= last) is vanishes, (first, last)
    done = make_reproduce(uri, run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical: all" in done.stdout
    new = next(r for r in client().search_runs([outcome.experiment_id]) if r.info.run_id != run_id)
    for key in ("grad_norm/W1", "weight_norm/W4", "update_ratio/W7"):  # the dynamics too
        assert history(client(), new.info.run_id, key) == history(client(), run_id, key)


@pytest.mark.slow
def test_every_logged_point_has_each_layers_norms_of_backpropagations_gradients(
    compose_config, store
):
    uri, client = store
    cfg = compose_config(f"tracking.uri={uri}", "model.depth=2", "model.width=8", *QUICK, ON)
    outcome = run_job(cfg)
    run_id, steps = outcome.run_id, outcome.result.steps
    metrics = client().get_run(run_id).data.metrics
    layers = [f"W{l}" for l in (1, 2, 3)]
    kinds = ("grad_norm", "weight_norm", "update_ratio")
    assert {k for k in metrics if "/" in k} == {f"{kind}/{w}" for kind in kinds for w in layers}
    for key in (f"{kind}/{w}" for kind in kinds for w in layers):
        assert [step for step, _ in history(client(), run_id, key)] == steps
    # at step 0: the norms of the initial weights and of backpropagation's first gradients
    data = datasets.load(cfg.dataset, seed=cfg.seed, dtype=cfg.train.dtype)
    dims = layer_dims(data.n_x, 2, 8, data.n_y)
    parameters = initialize_parameters_deep(dims, init="he", seed=cfg.seed)
    AL, caches = L_model_forward(data.X_train, parameters, hidden_activation="relu")
    grads = L_model_backward(AL, data.Y_train, caches)
    for w in layers:
        weight, grad = np.linalg.norm(parameters[w]), np.linalg.norm(grads[f"d{w}"])
        assert step_zero(client(), run_id, f"weight_norm/{w}") == weight
        assert step_zero(client(), run_id, f"grad_norm/{w}") == grad
        assert step_zero(client(), run_id, f"update_ratio/{w}") == 0.1 * grad / weight
    artifacts = {a.path for a in client().list_artifacts(run_id)}
    assert "dynamics.png" in artifacts


@pytest.mark.slow
def test_turning_dynamics_off_leaves_the_curves_bit_for_bit_and_logs_none(compose_config, store):
    uri, client = store
    runs = {}
    for dynamics in (False, True):
        cfg = compose_config(f"tracking.uri={uri}", f"tracking.dynamics={dynamics}", *QUICK)
        runs[dynamics] = run_job(cfg).run_id
    for key in ("train_cost", "val_cost", "test_cost"):
        assert history(client(), runs[True], key) == history(client(), runs[False], key)
    off = client().get_run(runs[False])
    assert not [key for key in off.data.metrics if "/" in key]
    assert "dynamics.png" not in {a.path for a in client().list_artifacts(runs[False])}
    assert "grad_norm/W1" in client().get_run(runs[True]).data.metrics


def test_a_points_dynamics_go_in_the_batch_of_its_costs(store):
    uri, client = store
    moons = datasets.load(OmegaConf.structured(DatasetConfig(n_samples=300)), seed=0)
    experiment = tracking.experiment_id(tracking.connect(uri), "batches")
    run_id = tracking.start_run(tracking.connect(uri), experiment, "live", {})
    live = tracking.LiveCurves(tracking.connect(uri), run_id, flush_seconds=1e-9)
    sent = []

    def after_each_batch(point):  # what the store holds once the point's batch is sent
        stored = [
            *client().get_metric_history(run_id, "train_cost"),
            *client().get_metric_history(run_id, "grad_norm/W2"),
        ]
        sent.append(sorted(m.key for m in stored if m.step == point.iteration))

    dynamics = Dynamics(0.3, live.keep)
    result = train(
        moons,
        layer_dims(2, 1, 4, 1),
        iterations=20,
        log_every=5,
        listeners=[dynamics, live, after_each_batch],
    )
    assert live.batches == len(result.steps) == 5  # one batch a point, not one more
    assert sent == [["grad_norm/W2", "train_cost"]] * 5
    assert dynamics.steps == result.steps and list(dynamics.grad_norms) == ["W1", "W2"]


def test_the_loop_updates_with_the_gradients_its_points_carry_and_curves_are_as_before():
    """The curves of the lecture's four steps written out, bit for bit, and each point's
    gradients those of backpropagation at that point's parameters."""
    moons = datasets.load(OmegaConf.structured(DatasetConfig(n_samples=300)), seed=0)
    dims, rate = layer_dims(2, 3, 8, 1), 0.3
    seen = []

    def keep(point):
        grads = {k: v.copy() for k, v in point.grads.items()}
        seen.append((point.iteration, {k: v.copy() for k, v in point.parameters.items()}, grads))

    result = train(moons, dims, learning_rate=rate, iterations=30, log_every=10, listeners=[keep])
    parameters = initialize_parameters_deep(dims, init="he", seed=0)
    curve_name, X_held_out, Y_held_out = held_out(moons)
    expected = {"train_cost": [], curve_name: []}
    for i in range(31):
        AL, caches = L_model_forward(moons.X_train, parameters, hidden_activation="relu")
        grads = L_model_backward(AL, moons.Y_train, caches)
        if i % 10 == 0:
            expected["train_cost"].append(compute_cost(AL, moons.Y_train))
            expected[curve_name].append(cost_on(X_held_out, Y_held_out, parameters, "relu"))
            iteration, at, carried = seen[i // 10]
            assert iteration == i
            for name in parameters:
                np.testing.assert_array_equal(at[name], parameters[name])
                np.testing.assert_array_equal(carried[f"d{name}"], grads[f"d{name}"])
        update_parameters(parameters, grads, rate)
    assert result.curves == expected


@pytest.mark.parametrize("n_layers", [1, 7, 12])  # 12: a colour bar instead of a legend
def test_the_dynamics_figure_draws_one_line_per_layer_first_to_last_all_text_inside(n_layers):
    steps = list(range(0, 2001, 20))
    norms = {
        f"W{l}": [10.0 ** (l - n_layers - 3) * (1 + s) for s in steps]
        for l in range(1, n_layers + 1)
    }
    figure = plots.layer_gradients(steps, norms, "moons d11-w64-lr0.001-leaky_relu")
    ax = figure.axes[0]
    assert ax.get_yscale() == "log" and len(ax.lines) == n_layers
    colours = [line.get_color() for line in ax.lines]
    assert colours == plots.layer_colours(n_layers) and len(set(map(str, colours))) == n_layers
    assert outside_the_canvas(figure) == [0, 0, 0, 0]
    legend_or_bar = [t.get_text() for t in figure.findobj(matplotlib.text.Text)]
    assert "W1" in legend_or_bar or "layer l (first to last)" in legend_or_bar


def test_the_ratio_by_depth_figure_has_one_line_per_activation_all_text_inside():
    table = pd.DataFrame(
        [
            (depth, activation, ratio * 10.0**-depth)
            for depth in range(0, 11)
            for activation, ratio in (("sigmoid", 1.0), ("relu", 0.5), ("relu", 1.0), ("relu", 4.0))
        ],
        columns=["depth", "activation", "ratio"],
    )
    figure = plots.gradient_ratio_by_depth(table)
    ax = figure.axes[0]
    assert [line.get_label() for line in ax.lines if line.get_label()[0] != "_"] == [
        "relu",
        "sigmoid",
    ]
    relu = ax.lines[0]
    np.testing.assert_allclose(relu.get_ydata(), [10.0**-d for d in range(11)])  # the median
    assert len(ax.collections) == 1  # relu's band, from 0.5 to 4 times it; sigmoid has one run
    np.testing.assert_allclose(ax.collections[0].get_paths()[0].vertices[:, 1].min(), 0.5e-10)
    assert outside_the_canvas(figure) == [0, 0, 0, 0]


def run_sweep(uri, tmp_path, *overrides):
    done = run_cli(
        "pipeline.train",
        "-m",
        "sweep=default",
        f"tracking.uri={uri}",
        "train.iterations=40",
        "train.log_every=4",
        "model.width=8",
        "train.learning_rate=0.5",
        ON,
        "hydra.launcher.n_jobs=1",
        *overrides,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    parents, children = parents_and_children(tables.MlflowClient(uri))
    return parents[0], children


@pytest.mark.slow
def test_a_sweep_ends_with_the_gradient_ratio_by_depth_on_its_parent(store, tmp_path):
    uri, client = store
    parent, children = run_sweep(uri, tmp_path, "model.depth=1,4", "model.activation=sigmoid,relu")
    artifacts = {a.path for a in client().list_artifacts(parent.info.run_id)}
    assert "dynamics_by_depth.png" in artifacts
    ratios = tables.gradient_ratios(client(), tables.sweep_table(client(), parent.info.run_id))
    expected = {}
    for child in children:
        depth = int(child.data.params["model.depth"])
        first = step_zero(client(), child.info.run_id, "grad_norm/W1")
        last = step_zero(client(), child.info.run_id, f"grad_norm/W{depth + 1}")
        expected[depth, child.data.params["model.activation"]] = first / last
    found = {(row.depth, row.activation): row.ratio for row in ratios.itertuples()}
    assert found == expected
    assert expected[4, "sigmoid"] < expected[1, "sigmoid"] and expected[4, "sigmoid"] < 1e-2
    assert expected[4, "relu"] > 1e-2  # He init keeps ReLU's gradients from vanishing


def test_mini_batches_log_their_last_batch_gradients_from_the_first_epoch_on(compose_config, store):
    """With mini-batches a point's gradients are the last batch's of the epoch before it: none
    at step 0, every later point has all of a layer's metrics, in the same steps as the curves."""
    uri, client = store
    extra = ["train.optimizer=adam", "train.batch_size=64", "train.learning_rate=0.01"]
    outcome = run_job(compose_config(f"tracking.uri={uri}", "train=quick", *extra, ON))
    steps = [step for step, _ in history(client(), outcome.run_id, "train_cost")]
    for key in ("grad_norm/W1", "weight_norm/W3", "update_ratio/W2"):
        logged = history(client(), outcome.run_id, key)
        assert [step for step, _ in logged] == steps[1:], key
        assert all(np.isfinite(value) and value > 0 for _, value in logged), key
