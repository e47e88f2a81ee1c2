"""Unusual sweeps a user can write, whose jobs hydra_adapter (and the launcher's plan, which
shares its split of overrides) compose as Hydra does, and which are refused where Hydra
refuses them. Real Hydra composition, nothing mocked; Hydra's own ``load_sweep_config``
(``hydra_adapter.HYDRA_LOAD_SWEEP_CONFIG``) is the oracle. Found by hostile testing: each
test failed before its fix."""

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from pipeline.job.config import config_digest
from pipeline.sweeps import grid, hydra_adapter
from tests.helpers import CONF, run_cli


@pytest.fixture
def searchpath(tmp_path):
    """A config dir for ``hydra.searchpath``: a new group (experiment, global package, the
    common Hydra idiom), a group the schema does not accept (extra), a new dataset option."""
    root = tmp_path / "sp"
    for path, text in {
        "experiment/deep.yaml": "# @package _global_\nmodel:\n  depth: 4\n",
        "experiment/shallow.yaml": "# @package _global_\nmodel:\n  depth: 0\n",
        "extra/a.yaml": "lr: 0.5\n",
        "extra/b.yaml": "lr: 0.7\n",
        "dataset/mine.yaml": "name: circles\nnoise: 0.3\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return f"hydra.searchpath=[file://{root}]"


def sweep_jobs(loader, master):
    """Each job's overrides, as Hydra's basic sweeper expands the master config's."""
    task = OmegaConf.to_container(master.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(task)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def outcome(load, loader, master, job):
    """The job's config as YAML, or the type of the error composing it raised."""
    try:
        return OmegaConf.to_yaml(load(loader, master, job))
    except Exception as error:  # what Hydra rejects must be rejected
        return f"rejected: {type(error).__name__}"


def assert_jobs_are_hydras(command_line):
    hydra_adapter._composed.clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", command_line, RunMode.MULTIRUN)
        jobs = sweep_jobs(loader, master)
        assert jobs
        for job in jobs:
            hydras = outcome(hydra_adapter.HYDRA_LOAD_SWEEP_CONFIG, loader, master, job)
            ours = outcome(hydra_adapter.load_sweep_config, loader, master, job)
            assert ours == hydras, job


def test_a_group_hydra_searchpath_adds_is_composed_as_a_group(searchpath):
    """``+experiment=deep`` from a hydra.searchpath dir is a group (model.depth 4), though
    the loader's own repository, without the searchpath, does not list it."""
    assert_jobs_are_hydras([searchpath, "+experiment=deep,shallow"])


def test_a_searchpath_group_hydra_rejects_is_rejected(searchpath):
    """``+extra=a,b``: Hydra rejects each job (Key 'extra' not in 'Config'), and so must
    hydra_adapter (it composed them with ``extra: a`` before)."""
    assert_jobs_are_hydras([searchpath, "+extra=a,b"])


@pytest.mark.parametrize(
    "hydra_override",
    [
        "++hydra.job.env_set.JOB_NUM=${hydra:job.num}",
        "++hydra.job.env_set.OUT=${hydra:runtime.output_dir}",
    ],
)
def test_an_interpolation_in_a_hydra_override_is_not_resolved_to_make_the_memos_key(
    hydra_override,
):
    """Hydra reads ``hydra.overrides.hydra`` unresolved (its run_job resolves env_set once
    the job's node is set); iterating the ListConfig for the memo's key resolved them, and a
    sweep stopped with 'InterpolationResolutionError: ... HydraConfig was not set'."""
    assert_jobs_are_hydras([hydra_override, "seed=1,2"])


@pytest.mark.parametrize(
    "override",
    [
        "++hydra={job:{env_copy:[HOME]}}",  # Hydra copies $HOME into env_set; ours: {}
        "++hydra={runtime:{choices:{dataset:x}}}",  # Hydra's choices win; ours: dataset: x
    ],
)
def test_a_value_set_on_the_hydra_node_is_set_before_hydras_runtime_fields(override):
    """``hydra`` alone is no Hydra override (``is_hydra_override``: ``hydra.`` or ``hydra/``):
    a dict set on it is a task override, which Hydra applies before it fills env_set from
    env_copy, runtime.choices, cwd, config_name: it is composed, not set afterwards."""
    assert_jobs_are_hydras([override, "seed=1,2"])


def hydras_digests(command_line):
    """Each job's digest, its config composed by Hydra, the hydra node left out as run_job
    leaves it out of the task's config."""
    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("config", command_line, RunMode.MULTIRUN)
    digests = []
    for job in sweep_jobs(loader, master):
        cfg = hydra_adapter.HYDRA_LOAD_SWEEP_CONFIG(loader, master, job)
        with open_dict(cfg):
            del cfg["hydra"]
        digests.append(config_digest(cfg))
    return digests


@pytest.mark.parametrize("swept", ["dataset=mine,moons", "+experiment=deep,shallow"])
def test_the_plan_composes_jobs_with_the_hydra_searchpath(searchpath, swept):
    """``grid.plan`` composes each job with the command line's hydra overrides, so with
    hydra.searchpath: ``dataset=mine`` is accepted (as in a single run), and
    ``+experiment=deep`` is planned with the digest the job will have."""
    grid._compose_groups.cache_clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[searchpath], return_hydra_config=True)
        checked = grid.plan("config", cfg, [swept])
        assert checked.digests == hydras_digests([searchpath, swept])


def test_the_plan_expands_glob_as_hydras_sweeper_does():
    """``dataset=glob(*)``: Hydra's sweeper expands it to every option, with its config
    loader; the plan's parser had none ('error: ConfigLoader is not set')."""
    grid._compose_groups.cache_clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
        checked = grid.plan("config", cfg, ["dataset=glob(*)"])
    assert checked.n_jobs == len(list((CONF / "dataset").glob("*.yaml")))


def test_a_key_starting_with_hydra_is_a_task_override_as_for_hydra():
    """``+hydrant=1,2`` is a task override for Hydra (2 jobs, each with its value); split as
    Hydra's own (``startswith("hydra")``), the plan had 1 job and the sweep ran 2."""
    line = ["+hydrant=1,2", "hydra.job.chdir=false"]
    parsed = OverridesParser.create().parse_overrides(line)
    task, _, hydra_own = grid.split_overrides(line)
    assert task == [o.input_line for o in parsed if not o.is_hydra_override()]
    assert hydra_own == [o.input_line for o in parsed if o.is_hydra_override()]


@pytest.mark.slow
def test_a_dry_run_with_another_config_dir_trains_nothing(tmp_path):
    """``-m --dry-run --config-dir DIR``: run_sweep is skipped for another config dir (Hydra
    runs such a sweep alone); the --dry-run flag was dropped, and the sweep trained."""
    (tmp_path / "conf").mkdir()
    result = run_cli(
        "pipeline.train",
        "-m",
        "--dry-run",
        "--config-dir",
        str(tmp_path / "conf"),
        "train.iterations=20",
        "seed=1,2",
        "hydra.launcher.n_jobs=1",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "error: --dry-run go with a sweep of conf/, without --config-dir or --config-path"
    )
    assert not (tmp_path / "mlflow.db").exists()  # nothing trained or written


@pytest.mark.slow
def test_a_sweep_over_hydras_config_is_rejected_before_the_parent_is_created(tmp_path):
    """Hydra rejects ``hydra.job.chdir=true,false`` ('Sweeping over Hydra's configuration is
    not supported'): one line, exit 2, before any parent run (a dry run listed 1 job)."""
    result = run_cli(
        "pipeline.train",
        "-m",
        "--dry-run",
        "hydra.job.chdir=true,false",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert result.returncode == 2, result.stdout
    assert "Sweeping over Hydra's configuration is not supported" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
