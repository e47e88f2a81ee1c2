"""Hydra's work that a sweep repeats for every job, done once.

For every job, Hydra's launchers (joblib's, submitit's, Ray's) run ``execute_job`` in the
worker: ``Singleton.set_state`` (which scans every installed plugin again, about 35 ms),
then ``load_sweep_config``: a full compose from the defaults list, reading and merging
every config file again (about 0.1 s). Jobs of a grid differ in values only, not in their
defaults list, so:

  - ``load_sweep_config`` here composes once per worker for each set of the jobs' group
    choices (``dataset=digits``) and then sets each job's values on a copy, with Hydra's own
    override functions, as Hydra's compose does after its defaults list;
  - ``set_state`` keeps the worker's plugins, scanned already: installed plugins do not
    change while a sweep runs.

Both are installed by ``reuse_in_this_process``; a process without them runs Hydra's own
steps, with the same result (tests/test_config.py compares every job's config with Hydra's).
They replace Hydra's methods for the whole process because Hydra's launchers call them on
Hydra's own classes inside ``execute_job``, with no hook to pass ours; the processes that
install them run nothing but the sweep's jobs.

Hydra's submitit launcher submits a sweep's jobs, then waits for each with submitit, which
hangs or fails on a job Slurm ended: pipeline.sweeps.slurm_launcher's subclass waits for them
itself. Hydra instantiates launchers from the ``hydra_plugins`` package only, by their class
name: ``instantiate_in_place`` has it instantiate ours under the plugin's name, and
``submit_slurm_jobs`` submits the jobs the plugin's way.

This is the one module that uses Hydra's private names (``hydra._internal``, ``Singleton``
state, names starting with ``_``, the joblib plugin's ``_core``); tests/test_layout.py
checks that no other does. It was tested with hydra-core ``TESTED``: with another release,
or when one of those names is gone, the speed-ups are left out and Hydra's own path runs
(slower, same configs), said in one warning line.
"""

import copy
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import filter_overrides
from hydra.plugins.sweeper import Sweeper
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.processes import releases

TESTED = ("1.3.",)  # hydra-core releases whose internals this module was tested with
log = logging.getLogger(__name__)


@functools.cache
def speed_ups_apply() -> bool:
    """Whether the installed Hydra is one this module's speed-ups were tested with; if not,
    one warning line, once."""
    otherwise = "its per-job speed-ups are off, and Hydra's own steps run (slower, same configs)"
    return releases.tested("hydra-core", hydra.__version__, TESTED, otherwise)


def args_parser():
    """Hydra's own command-line parser (``hydra.main`` parses with it)."""
    return get_args_parser()


def check_sweep_overrides(parsed: list[Override], run_mode: RunMode) -> None:
    """HydraException if Hydra would refuse these overrides in ``run_mode`` (a sweep over
    Hydra's own config), with Hydra's own words."""
    ConfigLoaderImpl.validate_sweep_overrides_legal(parsed, run_mode, from_shell=True)


def sweep_axes(parsed: list[Override]) -> dict[str, list[list[str]]]:
    """Each key's values as Hydra's basic sweeper expands them, key by key (a later override
    of a key takes its first one's place): the grid is their cartesian product, in order."""
    return {o.get_key_element(): BasicSweeper.split_arguments([o], None)[0] for o in parsed}


def joblib_arguments(launcher: DictConfig) -> dict:
    """The arguments Hydra's joblib launcher gives ``joblib.Parallel`` for its config."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    arguments = OmegaConf.to_container(launcher)
    arguments.pop("_target_")
    arguments["backend"] = "loky"  # as the launcher sets it
    process_joblib_cfg(arguments)
    return arguments


def instantiate_in_place(plugin: type, ours: type) -> None:
    """Where a config names the plugin class ``plugin`` (its ``_target_``), Hydra instantiates
    ``ours`` in this process."""
    Plugins.instance().class_name_to_class[f"{plugin.__module__}.{plugin.__name__}"] = ours


def submit_slurm_jobs(launcher, job_overrides: Sequence[Sequence[str]], first: int) -> list:
    """What hydra_submitit_launcher's ``SlurmLauncher.launch`` does before it waits: the jobs
    submitted as one Slurm array, numbered from ``first``; their submitit jobs."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params, cluster = dict(launcher.params), launcher._EXECUTOR  # "slurm"
    executor = submitit.AutoExecutor(
        cluster=cluster,
        folder=params.pop("submitit_folder"),
        **{f"{cluster}_max_num_timeout": params.pop("max_num_timeout")},
    )
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{key if key in queue_keys else f"{cluster}_{key}": v for key, v in params.items()}
    )
    sweep = launcher.config.hydra.sweep
    Path(str(sweep.dir)).mkdir(parents=True, exist_ok=True)
    if "mode" in sweep:
        os.chmod(str(sweep.dir), mode=int(str(sweep.mode), 8))
    numbers = range(first, first + len(job_overrides))
    for number, overrides in zip(numbers, job_overrides, strict=True):
        log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
    state = Singleton.get_state()
    arguments = [
        (list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", state)
        for n, o in zip(numbers, job_overrides, strict=True)
    ]
    return executor.map_array(launcher, *zip(*arguments, strict=True))


HYDRA_LOAD_SWEEP_CONFIG = ConfigLoaderImpl.load_sweep_config
HYDRA_SET_STATE = Singleton.set_state
MAX_COMPOSED = 16  # sets of group choices kept per process

# (config name, its sources, Hydra's overrides, the job's group overrides) -> composed config
_composed: dict[tuple, DictConfig] = {}


def skip_job_check() -> None:
    """Hydra's basic sweeper composes every job once more before launching it, only to check
    that it composes (about 0.1 s a job): ``sweep.plan`` has composed and validated every job.

    Set on the base class: Hydra's plugin scan executes the basic sweeper's module again,
    so a class imported from it beforehand is not the one Hydra instantiates.
    """
    if not speed_ups_apply():
        return
    Sweeper.validate_batch_is_legal = lambda self, batch: None


def reuse_in_this_process() -> None:
    """From now on, this process composes a job's config once per set of group choices and
    keeps its scanned plugins across jobs. Idempotent."""
    if not speed_ups_apply():
        return
    ConfigLoaderImpl.load_sweep_config = load_sweep_config
    Singleton.set_state = staticmethod(set_state_keeping_plugins)


def set_state_keeping_plugins(state: dict) -> None:
    """Hydra's ``Singleton.set_state``, without scanning the plugins again when this process
    has scanned them: the state a launcher sends leaves them out."""
    plugins = getattr(Singleton, "_instances", {}).get(Plugins)  # gone: scanned again, as Hydra
    if plugins is not None:
        state["instances"].setdefault(Plugins, plugins)
    HYDRA_SET_STATE(state)


def is_value_override(loader: ConfigLoaderImpl, override: Override) -> bool:
    """An override that sets a config value, which Hydra applies after composing the
    defaults list (``hydra._internal.defaults_list.Overrides``): not a group, not Hydra's.

    ``hydra`` alone is not Hydra's own override for Hydra, but a value set on it comes
    before Hydra's runtime fields: it is composed with the groups."""
    if override.key_or_group == "hydra" or override.is_hydra_override():
        return False
    if override.package is not None:
        return False
    return isinstance(override.value(), dict) or not loader.repository.group_exists(
        override.key_or_group
    )


def split_values(
    loader: ConfigLoaderImpl, overrides: list[str]
) -> tuple[list[Override], tuple[str, ...], list[Override]]:
    """(every override parsed, the lines of those that shape the defaults list, the value
    overrides): configs that differ only in values compose from the same defaults list."""
    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    is_value = [is_value_override(loader, o) for o in parsed]
    values = [o for o, value in zip(parsed, is_value, strict=True) if value]
    others = tuple(o.input_line for o, value in zip(parsed, is_value, strict=True) if not value)
    return parsed, others, values


def set_values(cfg: DictConfig, values: list[Override]) -> DictConfig:
    """A copy of ``cfg`` with the value overrides set, as Hydra sets them after composing."""
    cfg = copy.deepcopy(cfg)
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    return cfg


def load_sweep_config(
    self: ConfigLoaderImpl, master_config: DictConfig, sweep_overrides: list[str]
) -> DictConfig:
    """``ConfigLoaderImpl.load_sweep_config``, composed once per set of the jobs' other
    overrides; each job's values are then set on a copy, as Hydra sets them. Hydra's own
    path where the groups come from beyond conf/, or where its internals have moved."""
    if master_config.hydra.searchpath:  # groups the loader's repository does not list
        return HYDRA_LOAD_SWEEP_CONFIG(self, master_config, sweep_overrides)
    try:
        return composed_once(self, master_config, sweep_overrides)
    except AttributeError as error:
        log.warning(
            "warning: Hydra's internals have changed (%s): each job composed in full", error
        )
        return HYDRA_LOAD_SWEEP_CONFIG(self, master_config, sweep_overrides)


def composed_once(
    self: ConfigLoaderImpl, master_config: DictConfig, sweep_overrides: list[str]
) -> DictConfig:
    """The job's config from this process's composition of its group choices."""
    node = master_config.hydra
    parsed, others, values = split_values(self, sweep_overrides)
    sources = tuple(source.path for source in node.runtime.config_sources)
    hydra_overrides = tuple(OmegaConf.to_container(node.overrides.hydra))  # as Hydra: unresolved
    key = (node.job.config_name, sources, hydra_overrides, others)
    if key not in _composed:
        if len(_composed) >= MAX_COMPOSED:
            _composed.clear()
        _composed[key] = HYDRA_LOAD_SWEEP_CONFIG(self, master_config, list(others))
    cfg = set_values(_composed[key], values)
    task = [o for o in parsed if not o.is_hydra_override()]
    cfg.hydra.overrides.task = [o.input_line for o in task]
    dirname = cfg.hydra.job.config.override_dirname
    cfg.hydra.job.override_dirname = get_overrides_dirname(
        overrides=task,
        kv_sep=dirname.kv_sep,
        item_sep=dirname.item_sep,
        exclude_keys=dirname.exclude_keys,
    )
    OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
    return cfg
