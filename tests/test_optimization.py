"""The course's second part in a job: the optimizer, mini-batches, L2 and the learning rate's
decay, from the config through the loop to reproduction, the report's table and a search."""

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution

from pipeline import train as train_command
from pipeline.job import data
from pipeline.job.config import ADDED_LATER, ConfigError, DatasetConfig, validate
from pipeline.job.early_stopping import EarlyStopping
from pipeline.job.loop import Optimization, layer_dims, train
from pipeline.job.run import run_job
from pipeline.nn import (
    L_model_backward,
    L_model_forward,
    compute_cost,
    initialize_parameters_deep,
    update_parameters,
)
from pipeline.nn.decay import LR_DECAYS
from pipeline.search import compose_search
from pipeline.store import tables
from pipeline.sweeps.dimensions import distributions
from tests.helpers import all_runs, call_main
from tests.test_reproduce import reproduce

NEW_KEYS = [
    "optimizer",
    "beta",
    "beta1",
    "beta2",
    "epsilon",
    "batch_size",
    "l2",
    "lr_decay",
    "decay_rate",
]


@pytest.fixture(scope="module")
def moons():
    return data.load(OmegaConf.structured(DatasetConfig(n_samples=400)), seed=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.batch_size=0",
            "train.batch_size=0 is invalid: must be between 1 and the 600 "
            "training examples (null: all of them)",
        ),
        ("train.batch_size=601", "train.batch_size=601 is invalid: must be between 1 and the 600"),
        ("train.l2=-0.1", "train.l2=-0.1 is invalid: must be a finite number >= 0 (0: none)"),
        ("train.beta=1", "train.beta=1.0 is invalid: must be >= 0 and < 1"),
        ("train.beta1=-0.1", "train.beta1=-0.1 is invalid: must be >= 0 and < 1"),
        ("train.beta2=1.5", "train.beta2=1.5 is invalid: must be >= 0 and < 1"),
        ("train.epsilon=0", "train.epsilon=0.0 is invalid: must be a finite number > 0"),
        (
            "train.optimizer=sgd",
            "train.optimizer='sgd' is invalid: one of gd, momentum, rmsprop, adam",
        ),
        (
            "train.lr_decay=step",
            "train.lr_decay='step' is invalid: one of none, inverse_time, exponential",
        ),
        (
            "train.lr_decay=exponential train.decay_rate=0",
            "train.decay_rate=0.0 is invalid: "
            "decay_rate must be in (0, 1] for lr_decay exponential",
        ),
        (
            "train.lr_decay=inverse_time train.decay_rate=-1",
            "train.decay_rate=-1.0 is invalid: "
            "decay_rate must be a finite number >= 0 for lr_decay inverse_time",
        ),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2_before_anything_is_written(
    capsys, tmp_path, override, message
):
    store = tmp_path / "store"
    uri = f"tracking.uri=sqlite:///{store / 'mlflow.db'}"
    done = call_main(capsys, train_command.main, uri, *override.split())
    assert done.returncode == 2
    err = done.stderr
    assert err.startswith(f"error: {message}") and err.count("\n") == 1 and err.endswith("\n")
    assert not store.exists()


def test_the_batch_size_may_be_every_training_example_and_no_more(compose_config):
    validate(compose_config("train.batch_size=600"))  # 1000 moons: 600 train
    validate(compose_config("dataset=iris", "train.batch_size=89"))  # 150: 112, then 89 train
    with pytest.raises(ConfigError, match=r"train\.batch_size=90 is invalid: .* the 89 training"):
        validate(compose_config("dataset=iris", "train.batch_size=90"))


def lecture_loop(moons, dims, learning_rate, iterations, lambd=0.0, decay=None):
    """The lecture's four steps, written out here: the train cost of each iteration."""
    parameters = initialize_parameters_deep(dims, seed=0)
    costs = []
    for i in range(iterations + 1):
        AL, caches = L_model_forward(moons.X_train, parameters)
        costs.append(compute_cost(AL, moons.Y_train))
        rate = learning_rate if decay is None else decay(learning_rate, i)
        update_parameters(parameters, L_model_backward(AL, moons.Y_train, caches, lambd), rate)
    return costs


def test_full_batch_gradient_descent_is_the_lecture_loop_bit_for_bit(moons):
    dims = layer_dims(2, 2, 8, 1)
    default = train(moons, dims, learning_rate=0.5, iterations=40, log_every=1)
    assert default.train_cost == lecture_loop(moons, dims, 0.5, 40)
    explicit = Optimization("gd", batch_size=None, l2=0.0, lr_decay="none", decay_rate=0.5)
    again = train(moons, dims, learning_rate=0.5, iterations=40, log_every=1, optimization=explicit)
    assert again.curves == default.curves and again.test_cost == default.test_cost


def test_full_batch_l2_and_decay_are_the_lecture_loop_with_them(moons):
    dims = layer_dims(2, 2, 8, 1)
    optimization = Optimization(l2=0.7, lr_decay="inverse_time", decay_rate=0.1)
    result = train(
        moons, dims, learning_rate=0.5, iterations=40, log_every=1, optimization=optimization
    )

    def decay(rate, epoch):
        return LR_DECAYS["inverse_time"](rate, epoch, 0.1)

    assert result.train_cost == lecture_loop(moons, dims, 0.5, 40, lambd=0.7, decay=decay)
    assert result.train_cost != lecture_loop(moons, dims, 0.5, 40)


def test_same_config_same_curve_bit_for_bit_whatever_the_global_state(moons):
    adam = Optimization("adam", batch_size=32)

    def run(seed, global_seed):
        np.random.seed(global_seed)  # noqa: NPY002 - must change nothing
        return train(
            moons,
            layer_dims(2, 2, 8, 1),
            learning_rate=0.01,
            iterations=30,
            log_every=3,
            seed=seed,
            optimization=adam,
        )

    first, second = run(seed=5, global_seed=1), run(seed=5, global_seed=2)
    assert first.curves == second.curves and first.test_cost == second.test_cost
    for key, value in first.parameters.items():
        np.testing.assert_array_equal(value, second.parameters[key])
    assert run(seed=6, global_seed=1).curves != first.curves


def trained(data_, dims, optimization, learning_rate, iterations, log_every, **kwargs):
    return train(
        data_,
        dims,
        learning_rate=learning_rate,
        iterations=iterations,
        log_every=log_every,
        optimization=optimization,
        **kwargs,
    )


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "rmsprop", "adam"])
@pytest.mark.parametrize(
    ("activation", "dtype"),
    [("relu", "float32"), ("leaky_relu", "float64"), ("tanh", "float32"), ("sigmoid", "float64")],
)
def test_every_optimizer_trains_a_softmax_in_either_dtype_with_every_activation(
    optimizer, activation, dtype
):
    blobs = data.load(
        OmegaConf.structured(DatasetConfig(name="blobs", n_classes=3, n_samples=300)),
        seed=0,
        dtype=dtype,
    )
    optimization = Optimization(
        optimizer, batch_size=16, l2=0.1, lr_decay="exponential", decay_rate=0.99
    )
    rate = 0.1 if optimizer in ("gd", "momentum") else 0.01
    result = trained(blobs, [2, 8, 8, 3], optimization, rate, 30, 10, activation=activation)
    assert result.steps == [0, 10, 20, 30] and result.diverged_at is None
    assert result.train_cost[-1] < result.train_cost[0] / 2
    assert result.val_accuracy >= 0.9
    assert {p.dtype for p in result.parameters.values()} == {np.dtype(dtype)}


def test_early_stopping_with_mini_batches_keeps_its_best_point():
    noisy = data.load(
        OmegaConf.structured(DatasetConfig(n_samples=100, noise=0.25, val_size=0.5)), seed=0
    )
    adam = Optimization("adam", batch_size=8)
    stopping = [EarlyStopping(patience=5)]
    result = trained(noisy, [2, 64, 64, 1], adam, 0.01, 1000, 10, listeners=stopping)
    val = result.curves["val_cost"]
    assert result.stopped_at < 1000 and result.best_iteration == result.steps[int(np.argmin(val))]
    assert result.stopped_at == result.best_iteration + 5 * 10


def test_a_diverging_mini_batch_run_stops_at_its_first_non_finite_epoch(moons):
    momentum = Optimization("momentum", batch_size=16)
    result = trained(moons, [2, 64, 64, 64, 1], momentum, 1000.0, 500, 50)
    assert result.diverged_at is not None and result.diverged_at < 50
    assert result.steps == [0] and np.isnan(result.test_accuracy)


def test_a_mini_batch_adam_job_learns_moons(compose_config, store):
    uri, client = store
    cfg = compose_config(
        f"tracking.uri={uri}",
        "train.optimizer=adam",
        "train.batch_size=64",
        "train.learning_rate=0.01",
        "train.iterations=100",
        "train.log_every=10",
    )
    outcome = run_job(cfg)
    run = client().get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "d2-w16-lr0.01-adam-b64"
    assert run.data.params["train.optimizer"] == "adam" and run.data.params["train.l2"] == "0.0"
    history = client().get_metric_history(outcome.run_id, "train_cost")
    assert [m.step for m in history] == list(range(0, 101, 10))
    assert history[-1].value < history[0].value / 4
    assert run.data.metrics["val_accuracy"] >= 0.95


@pytest.mark.slow
def test_a_config_recorded_today_without_the_new_keys_reproduces_bit_for_bit(
    compose_config, store, tmp_path, capfd
):
    uri, client = store
    recorded = run_job(compose_config(f"tracking.uri={uri}", "train=quick", "model.width=8"))
    client().download_artifacts(recorded.run_id, "config.yaml", str(tmp_path))
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    for key in NEW_KEYS:
        del config["train"][key]  # as a config recorded before they existed
    older = tmp_path / "older.yaml"
    older.write_text(yaml.safe_dump(config))
    done = reproduce(capfd, uri, str(older), "--against", recorded.run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "identical: all 206 values" in done.stdout  # 2 curves x 101, test_cost, accuracies
    new = next(r for r in all_runs(client()) if r.info.run_id != recorded.run_id)
    for key in NEW_KEYS:
        assert new.data.params[f"train.{key}"] == str(ADDED_LATER[f"train.{key}"])


@pytest.mark.slow
def test_a_mini_batch_run_reproduces_bit_for_bit(compose_config, store, tmp_path, capfd):
    uri, _ = store
    cfg = compose_config(
        f"tracking.uri={uri}",
        "train=quick",
        "train.optimizer=rmsprop",
        "train.batch_size=50",
        "train.learning_rate=0.01",
        "train.l2=0.1",
        "train.lr_decay=inverse_time",
        "train.decay_rate=0.01",
    )
    done = reproduce(capfd, uri, run_job(cfg).run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "identical: all 206 values" in done.stdout


def test_the_report_table_has_the_optimizer_batch_size_and_l2(compose_config, store):
    uri, client = store
    run_job(compose_config(f"tracking.uri={uri}", "train=quick"))
    run_job(
        compose_config(
            f"tracking.uri={uri}",
            "train=quick",
            "train.optimizer=adam",
            "train.batch_size=100",
            "train.l2=0.3",
            "train.learning_rate=0.01",
        )
    )
    # a run recorded before the keys existed: their params are missing
    old = client().create_run(all_runs(client())[0].info.experiment_id).info.run_id
    client().log_param(old, "model.depth", 1)
    client().set_terminated(old)
    table = tables.runs_table(all_runs(client())).set_index("run_id")
    rows = table[["optimizer", "batch_size", "l2"]].to_dict("index")
    assert sorted(map(str, rows.values())) == sorted(
        map(
            str,
            [
                {"optimizer": "adam", "batch_size": 100.0, "l2": 0.3},
                {"optimizer": "gd", "batch_size": np.nan, "l2": 0.0},  # full batch
                {"optimizer": "gd", "batch_size": np.nan, "l2": 0.0},  # as before the keys existed
            ],
        )
    )


def test_a_search_space_takes_the_optimizer_as_a_choice_and_l2_on_a_log_scale(compose_config):
    space = {"train.optimizer": "choice(gd,adam)", "train.l2": "tag(log,interval(0.001,1.0))"}
    dimensions = distributions(space)
    assert dimensions["train.optimizer"] == CategoricalDistribution(["gd", "adam"])
    assert dimensions["train.l2"] == FloatDistribution(0.001, 1.0, log=True)
    overrides = [f"{key}={value}" for key, value in space.items()]
    _, checked, _ = compose_search("config", overrides)  # every corner validates
    assert checked.items() >= space.items()
    with pytest.raises(ConfigError, match=r"train\.optimizer='sgd' is invalid"):
        compose_search("config", ["train.optimizer=choice(adam,sgd)"])
