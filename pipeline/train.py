"""Entry point: ``python -m pipeline.train [overrides]`` runs one job; with ``-m``, a sweep.

Thin wiring: Hydra composes conf/, pipeline.job runs the job, pipeline.sweep (a Hydra
callback) owns the sweep's parent run. Before Hydra starts, every job's config is checked
here, so that a bad value is one line and exit 2 before anything is created.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pipeline import config, process, sweep, tracking
from pipeline.errors import fail

config.register()
CONF = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the test accuracy, which a search maximises; None (a failed trial) if diverged."""
    process.tune_for_jobs()  # also in a sweep's worker processes
    from pipeline.job import run_job  # here: a parallel sweep's launcher never trains

    hydra_cfg = HydraConfig.get()
    tags = {"hydra.overrides": " ".join(hydra_cfg.overrides.task) or "(none)"}
    parent = sweep.parent_from_env() if hydra_cfg.mode == RunMode.MULTIRUN else None
    if parent:
        tags |= {"sweep_id": parent.run_id, "job_number": hydra_cfg.job.num}
        # a sweep prints one line per job; per-iteration progress stays in the job's log file
        logging.getLogger("pipeline.training").propagate = False
    try:
        outcome = run_job(
            cfg,
            tags=tags,
            parent_run_id=parent and parent.run_id,
            experiment_id=parent and parent.experiment_id,
        )
    except config.ConfigError as error:
        if parent:  # a sweep's job: Hydra records it as failed
            raise
        fail(error)
    if parent:
        sweep.report_progress(cfg, outcome, parent, hydra_cfg.job.num)
    else:
        r = outcome.result
        accuracy = (
            "diverged" if r.diverged_at is not None else f"test accuracy {r.test_accuracy:.3f}"
        )
        print(f"{outcome.status} run {outcome.run_id}: {accuracy}, {r.seconds:.1f}s", flush=True)
        print(f"runs table (after `make ui`): {tracking.runs_table_url(outcome.experiment_id)}")
    return outcome.result.test_accuracy if outcome.status == "FINISHED" else None


def check_overrides(argv: list[str]) -> None:
    """Compose conf/ with the command line and validate the job's config, or with ``-m``
    every job of the sweep; exit 2 with one line if any is bad (Hydra would print several
    lines and exit 1, or fail a job only once the sweep runs). ``hydra.*`` is Hydra's own.
    """
    args = get_args_parser().parse_args(argv)
    modes = [args.run, args.multirun, args.cfg, args.info, args.shell_completion]
    if sum(bool(mode) for mode in modes) > 1:  # Hydra would raise with a traceback
        fail("give only one of --run, --multirun, --cfg, --info and --shell-completion")
    if args.config_path or args.config_dir:  # not our conf/: Hydra checks it itself
        return
    name = args.config_name or "config"
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
        task = [o.input_line for o in overrides if not o.key_or_group.startswith("hydra")]
        plain = [o.input_line for o in overrides if not o.is_sweep_override()]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(name, overrides=plain, return_hydra_config=True)
            if args.multirun:
                sweep.check_jobs(name, sweep.planned_jobs(cfg.hydra.sweeper, task))
            else:
                config.validate(cfg)
    except (config.ConfigError, HydraException, OmegaConfBaseException) as error:
        fail(config.error_line(error))
    if not (args.cfg or args.info or args.help or args.shell_completion):  # jobs will run: the
        try:  # store answers, before any job is launched (Hydra would only warn in its callback)
            tracking.connect(tracking.tracking_uri(cfg.tracking.uri))
        except tracking.StoreError as error:
            fail(error)


if __name__ == "__main__":
    process.tune_for_jobs()
    check_overrides(sys.argv[1:])
    main()
