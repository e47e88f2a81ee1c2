"""Every config composes through Hydra, and every bad value is named with its key."""

import os
import re
from itertools import pairwise
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import RunMode
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner

from pipeline import train
from pipeline.job.config import (
    PRUNERS,
    ConfigError,
    config_digest,
    error_line,
    machine_memory,
    network_size,
    training_bytes,
    validate,
)
from pipeline.job.data import BUNDLED_SHAPES, load
from pipeline.job.loop import layer_dims
from pipeline.search import compose_search
from pipeline.store import tables, tracking
from pipeline.sweeps import grid, hydra_adapter
from pipeline.sweeps.dimensions import corners, distributions
from pipeline.sweeps.grid import plan, planned_jobs
from pipeline.sweeps.studies import pruner
from tests.helpers import CONF, assert_one_error_line, call_main

GROUPS = ["dataset", "model", "train", "tracking"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override", [f"{group}={name}" for group in GROUPS for name in options(group)]
)
def test_every_group_option_composes_and_validates(compose_config, override):
    cfg = compose_config(override)
    validate(cfg)
    assert set(cfg) == {
        "dataset",
        "model",
        "train",
        "tracking",
        "search",
        "sweep",
        "seed",
        "sweep_name",
    }


@pytest.mark.parametrize("sweep", [s for s in options("sweep") if s != "search"])  # see below
def test_every_job_of_every_named_sweep_is_valid(compose_config, sweep):
    cfg = compose_config(f"sweep={sweep}", hydra=True)
    assert cfg.sweep_name == sweep
    checked = plan("config", cfg, [f"sweep={sweep}"])  # raises on the first bad job
    assert len(checked.jobs) >= 2 and all(f"sweep={sweep}" in job for job in checked.jobs)
    assert len(set(checked.names)) == len(checked.jobs)


def test_the_default_grid_is_every_combination(compose_config):
    cfg = compose_config("sweep=default", hydra=True)
    jobs = planned_jobs(cfg.hydra.sweeper, ["sweep=default", "model.depth=1,2"])
    assert len(jobs) == 2 * 3 * 3  # the command line's values replace the file's
    assert jobs[0] == [
        "model.depth=1",
        "model.width=64",
        "train.learning_rate=0.01",
        "sweep=default",
    ]


@pytest.mark.parametrize(
    "command_line",
    [[f"sweep={s}"] for s in options("sweep") if s != "search"]
    + [["dataset=moons,digits", "model.depth=0,1", "+model.extra=1,{a: 2}", "~seed"]],
)
def test_a_sweeps_job_configs_are_hydras_though_composed_once(command_line):
    """Hydra's launchers compose every job's config again in the worker; hydra_adapter composes
    once per set of group choices and sets the values. Both give the same config, Hydra's
    own node included (the overrides, the output folder's name)."""
    hydra_adapter._composed.clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", command_line, RunMode.MULTIRUN)
        jobs = planned_jobs(master.hydra.sweeper, [o for o in command_line if "sweep=" not in o])
        for job in jobs:
            ours = hydra_adapter.load_sweep_config(loader, master, job)
            hydras = hydra_adapter.HYDRA_LOAD_SWEEP_CONFIG(loader, master, job)
            assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras), job
            assert ours.hydra.overrides.task == job
    groups = {key[-1] for key in hydra_adapter._composed}
    assert len(groups) == len({tuple(o for o in job if "dataset" in o) for job in jobs})


def test_the_search_space_is_checked_at_its_corners(compose_config):
    cfg, space, plain = compose_search("config", [])  # raises on the first bad corner
    assert cfg.sweep_name == "search" and plain == ["sweep=search"]
    jobs = corners(distributions(space))
    depths = {o for job in jobs for o in job if o.startswith("model.depth=")}
    widths = {o for job in jobs for o in job if o.startswith("model.width=")}
    assert depths == {"model.depth=0", "model.depth=4"}  # range(0, 5): 0 to 4
    assert widths == {"model.width=2", "model.width=128"}
    assert len(jobs) == 2 * 2 * 2


def test_the_command_line_changes_the_search_space(compose_config):
    _, space, plain = compose_search("config", ["model.depth=2", "model.activation=relu,tanh"])
    assert "model.depth" not in space and "model.depth=2" in plain  # fixed
    dimensions = distributions(space)
    assert dimensions["model.activation"] == CategoricalDistribution(["relu", "tanh"])
    assert dimensions["model.width"] == IntDistribution(2, 128, log=True)
    assert dimensions["train.learning_rate"] == FloatDistribution(0.001, 3.0, log=True)


def test_a_log_scale_on_a_range_is_kept_or_refused():
    (width,) = distributions({"model.width": "tag(log,range(2,128))"}).values()
    assert width == IntDistribution(2, 127, log=True)
    with pytest.raises(ConfigError, match="step is 1"):  # Optuna's rule for a log scale
        distributions({"model.width": "tag(log,range(2,128,2))"})


@pytest.mark.parametrize("name", PRUNERS)
def test_every_pruner_name_is_one_of_optunas(compose_config, name):
    chosen = pruner(compose_config(f"search.pruner={name}"))
    kinds = {"median": MedianPruner, "hyperband": HyperbandPruner, "none": NopPruner}
    assert type(chosen) is kinds[name]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.width=int(interval(0,8))", "model.width=0 is invalid: must be >= 1"),
        ("model.depth=tag(log,interval(0,3))", "model.depth='tag(log,interval(0,3))' is invalid"),
        ("search.pruner=sometimes", "search.pruner='sometimes' is invalid: one of median"),
    ],
)
def test_a_bad_search_is_a_config_error(compose_config, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose_search("config", [override])


@pytest.mark.parametrize(
    ("typo", "message"),
    [
        ("model.activation=relu,gelu", "model.activation='gelu' is invalid"),
        ("model.width=choice(8,0)", "model.width=0 is invalid: must be >= 1"),
    ],
)
def test_a_bad_value_in_a_sweep_is_a_config_error_not_an_exit(compose_config, typo, message):
    cfg = compose_config("sweep=default", hydra=True)
    with pytest.raises(ConfigError, match=message):
        plan("config", cfg, ["sweep=default", typo])


def test_the_digest_counts_what_changes_the_result_and_nothing_else(compose_config):
    base = config_digest(compose_config())
    assert config_digest(compose_config()) == base  # stable
    for same in (
        "tracking.uri=sqlite:///elsewhere.db",
        "tracking.experiment=x",
        "sweep_name=y",
        "sweep.max_jobs=5",
        "search.workers=3",
    ):
        assert config_digest(compose_config(same)) == base, same
    for other in ("train.dtype=float32", "train.blas_threads=2", "seed=1", "model.width=17"):
        assert config_digest(compose_config(other)) != base, other
    # a sweep's job, composed as the sweep checks it, has the digest Hydra's job will have
    cfg = compose_config("sweep=default", hydra=True)
    checked = plan("config", cfg, ["sweep=default", "model.width=17", "model.depth=2"])
    assert (
        config_digest(
            compose_config(
                "sweep=default", "model.width=17", "model.depth=2", "train.learning_rate=0.01"
            )
        )
        in checked.digests
    )


def test_defaults(compose_config):
    cfg = compose_config()
    assert (cfg.dataset.name, cfg.model.depth, cfg.model.width) == ("moons", 2, 16)
    assert cfg.tracking.experiment == "moons"
    assert cfg.train.iterations // cfg.train.log_every >= 100


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=-1", "model.depth=-1 is invalid: must be >= 0"),
        ("model.width=0", "model.width=0 is invalid: must be >= 1"),
        ("train.learning_rate=0", "train.learning_rate=0.0 is invalid: must be a finite number"),
        ("train.learning_rate=-0.5", "train.learning_rate=-0.5 is invalid: must be a finite"),
        ("train.iterations=0", "train.iterations=0 is invalid: must be >= 1"),
        ("train.log_every=0", "train.log_every=0 is invalid: must be between 1 and"),
        ("train.log_every=5000", "train.log_every=5000 is invalid: must be between 1 and"),
        ("dataset.test_size=1.0", "dataset.test_size=1.0 is invalid: must be between 0 and 1"),
        ("dataset.test_size=0", "dataset.test_size=0.0 is invalid"),
        ("dataset.name=mnist", "dataset.name='mnist' is invalid: known data sets: moons"),
        ("model.activation=gelu", "model.activation='gelu' is invalid: one of relu"),
        ("model.init=zeros", "model.init='zeros' is invalid: one of he"),
        ("train.dtype=float16", "train.dtype='float16' is invalid: one of float64, float32"),
        ("dataset.n_samples=3", "dataset.n_samples=3 is invalid: too few for 2 classes"),
        ("dataset.val_size=1", "dataset.val_size=1.0 is invalid: must be >= 0 and < 1"),
        ("dataset.val_size=-0.1", "dataset.val_size=-0.1 is invalid: must be >= 0 and < 1"),
        (
            "dataset.n_samples=6",
            "dataset.n_samples=6 is invalid: too few for 2 classes in each "
            "part: 3 train, 1 validation, 2 test (test_size=0.25, val_size=0.2)",
        ),
        (
            "dataset=iris dataset.val_size=0.98",
            "dataset.val_size=0.98 is invalid: too few for 3 "
            "classes in each part: 2 train, 110 validation, 38 test",
        ),
        ("train.patience=-1", "train.patience=-1 is invalid: must be >= 0"),
        (
            "train=early_stop dataset.val_size=0",
            "train.patience=10 is invalid: early stopping "
            "watches val_cost: set dataset.val_size > 0",
        ),
        ("train.min_delta=-1", "train.min_delta=-1.0 is invalid: must be a finite number >= 0"),
        ("tracking.flush_seconds=0", "tracking.flush_seconds=0.0 is invalid: must be > 0"),
    ],
)
def test_bad_values_name_key_and_value(compose_config, override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(*override.split()))
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "model.depth=deep",
            "model.depth='deep' is invalid: Value 'deep' of type 'str' could not be converted"
            " to Integer",
        ),
        ("model.depht=3", "model.depht is not a config key: Key 'depht' not in 'ModelConfig'"),
        ("model=wide", "model=wide is invalid: known options: default, logistic"),
        ("seed=[1", "seed=[1 cannot be parsed: no viable alternative at input '[1'"),
    ],
)
def test_hydra_composition_errors_become_one_line(compose_config, override, line):
    with pytest.raises(HydraException) as error:
        compose_config(override)
    assert error_line(error.value) == line


@pytest.mark.parametrize(
    ("seed", "ok"), [(-1, False), (0, True), (2**32 - 1, True), (2**32, False)]
)
def test_seed_is_in_numpys_range(compose_config, seed, ok):
    cfg = compose_config(f"seed={seed}")
    if ok:
        validate(cfg)
    else:
        with pytest.raises(ConfigError, match=rf"^seed={seed} is invalid: must be between 0 and"):
            validate(cfg)


def test_network_that_does_not_fit_in_memory_names_its_cause(compose_config):
    memory = machine_memory() / 2**30
    for overrides, key in [
        (["model.width=10000000"], "model.width=10000000"),
        (["model.depth=100000000"], "model.depth=100000000"),
        (["dataset.n_samples=100000000000"], "dataset.n_samples=100000000000"),
        (["dataset=blobs", "dataset.n_features=10000000000"], "dataset.n_features=10000000000"),
    ]:
        cfg = compose_config(*overrides)
        with pytest.raises(ConfigError) as refused:
            validate(cfg)
        estimate = training_bytes(cfg) / 2**30
        assert str(refused.value).startswith(f"{key} is invalid: about {estimate:,.0f} GiB")
        assert str(refused.value).endswith(f"more than the {memory:.0f} GiB this machine has")
    validate(compose_config("model.width=512", "model.depth=4"))  # large, but fits


def test_training_bytes_counts_parameters_activations_and_gradients(compose_config):
    cfg = compose_config("model.depth=1", "model.width=10", "train.dtype=float32")
    dims, n_train, n_test = [2, 10, 1], 750, 250
    n_parameters = 10 * 3 + 1 * 11
    expected = 4 * (2 * n_parameters + 2 * sum(dims) * n_train + sum(dims) * n_test)
    assert training_bytes(cfg) == expected


@pytest.mark.parametrize("depth, width", [(0, 5), (1, 10), (3, 7)])
def test_network_size_counts_the_layers_it_does_not_list(depth, width):
    dims = layer_dims(4, depth, width, 3)
    parameters = sum(units * (previous + 1) for previous, units in pairwise(dims))
    assert network_size(4, depth, width, 3) == (parameters, sum(dims))


def test_bundled_data_set_sizes_match_scikit_learn():
    from sklearn import datasets

    for name, shape in BUNDLED_SHAPES.items():
        x, _ = getattr(datasets, f"load_{name}")(return_X_y=True)
        assert x.shape == shape, name


def test_hydra_does_not_compose_a_planned_grid_a_second_time(monkeypatch):
    """plan() has checked every job of a grid: the sweeper Hydra instantiates skips its own
    check, though Hydra's plugin scan (here run again) creates its class anew."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    monkeypatch.setattr(Sweeper, "validate_batch_is_legal", Sweeper.validate_batch_is_legal)
    hydra_adapter.skip_job_check()
    Plugins.instance()._initialize()  # the scan executes the basic sweeper's module again
    classes = Plugins.instance().class_name_to_class
    sweeper = classes["hydra._internal.core_plugins.basic_sweeper.BasicSweeper"](None)
    # no config: Hydra's own check would fail at once
    assert sweeper.validate_batch_is_legal([["model.depth=1"]]) is None


@pytest.mark.parametrize("n_features", [2, 3, 6])
def test_classification_accepts_the_most_classes_scikit_learn_makes_and_no_more(
    compose_config, n_features
):
    most = 2 ** max(2, n_features // 2)  # scikit-learn: n_classes <= 2**n_informative
    ok = compose_config(
        "dataset=classification",
        f"dataset.n_features={n_features}",
        f"dataset.n_classes={most}",
        f"dataset.n_samples={40 * most}",
    )
    validate(ok)
    assert load(ok.dataset, seed=0).n_classes == most  # scikit-learn makes them
    too_many = OmegaConf.merge(ok, {"dataset": {"n_classes": most + 1}})
    with pytest.raises(ConfigError, match=f"at most {most} classes"):
        validate(too_many)


@pytest.mark.parametrize("dry_run", [["--dry-run"], []], ids=["dry run", "sweep"])
def test_a_grid_over_sweep_max_jobs_is_refused_before_any_job_is_composed(
    dry_run, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    # its first job (width 0) is invalid: had it been composed, that would be the error;
    # Hydra's basic launcher: no joblib workers warming in this process
    grid = ["model.width=range(0,1001)", "hydra/launcher=basic"]
    argv = ["-m", *dry_run, *grid, f"tracking.uri={uri}"]
    done = call_main(capsys, train.main, *argv)
    more = "the grid has 1,001 jobs, more than sweep.max_jobs=1,000"
    assert_one_error_line(done, more, "sweep.max_jobs=1001")
    assert os.listdir(tmp_path) == []  # no store, no Hydra outputs
    done = call_main(capsys, train.main, *argv, "sweep.max_jobs=1001")
    assert_one_error_line(done, "model.width=0 is invalid")
    assert done.stdout == ""  # the first job was the bad one


def test_a_dry_run_lists_each_job_as_soon_as_it_is_checked(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["-m", "--dry-run", "model.width=4,8,0", "model.depth=1"]
    done = call_main(capsys, train.main, *argv)
    assert_one_error_line(done, "model.width=0 is invalid")
    # the jobs before the bad one were listed before it was checked
    lines = [line.split()[:2] for line in done.stdout.splitlines()]
    assert lines == [["1", "d1-w4-lr0.1"], ["2", "d1-w8-lr0.1"]]


@pytest.mark.parametrize("n_jobs, cores, workers", [(-1, "1", 1), (-2, "1", 1), (2, "1", 2)])
def test_the_launchers_workers_are_the_cores_joblib_may_use(
    compose_config, monkeypatch, n_jobs, cores, workers
):
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", cores)  # as a cgroup quota or CPU affinity would
    cfg = compose_config(f"hydra.launcher.n_jobs={n_jobs}", hydra=True)
    assert grid.launcher_workers(cfg.hydra.launcher) == workers


def test_a_dry_run_says_how_long_at_the_latest_sweeps_time_per_job(compose_config, store):
    uri, _ = store
    client = tracking.connect(uri)
    experiment = tracking.experiment_id(client, "moons")

    def finished_sweep(name: str, seconds: list[int], tags: dict) -> None:
        parent = tracking.start_run(client, experiment, name, {tracking.SWEEP_TAG: "x", **tags})
        for s in seconds:  # each child's wall time, as its start and end record it
            child = client.create_run(
                experiment, start_time=10**12, tags={MLFLOW_PARENT_RUN_ID: parent}
            ).info.run_id
            client.set_terminated(child, end_time=10**12 + 1000 * s)
        client.set_terminated(parent)

    finished_sweep("default-1", [1, 2, 9], {})
    finished_sweep("search-1", [100], {tables.STUDY_TAG: "s"})  # newer, but a search
    cfg = compose_config(f"tracking.uri={uri}", "hydra.launcher.n_jobs=2", hydra=True)
    assert grid.time_estimate(cfg, 1000) == (
        "at 2 s a job (the median of default-1): 33 min on one worker, 17 min on 2"
    )
    assert grid.time_estimate(cfg, 0) is None  # a resumed sweep with nothing left to run
    nowhere = compose_config(f"tracking.uri={uri}x", hydra=True)  # no store there
    assert grid.time_estimate(nowhere, 1000) is None
    assert not Path(f"{uri.removeprefix('sqlite:///')}x").exists()


def test_a_sweep_started_before_the_optimizers_keeps_its_digests(compose_config):
    """The optimization's keys at their old meaning leave a job's digest as it was, so a sweep
    started before they existed resumes and skips its finished jobs; another value counts."""
    cfg = compose_config("model.depth=3", "train.learning_rate=0.5")
    assert config_digest(cfg) == "81adca2e79cef310"  # what commit 31c7b78's code computed
    assert (
        config_digest(compose_config("model.depth=3", "train.learning_rate=0.5", "train.l2=0.1"))
        != "81adca2e79cef310"
    )
