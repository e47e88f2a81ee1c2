"""Entry point: ``python -m pipeline.train [overrides]`` runs one job; with ``-m``, a sweep.

Thin wiring: Hydra composes conf/, pipeline.job runs the job, pipeline.sweep (a Hydra
callback) owns the sweep's parent run.
"""

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline import config, sweep
from pipeline.cli import fail
from pipeline.job import run_job

config.register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the test accuracy, which a search maximises; None (a failed trial) if diverged."""
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
    sweep.report_progress(cfg, outcome, parent, hydra_cfg.job.num if parent else None)
    return outcome.result.test_accuracy if outcome.status == "FINISHED" else None


if __name__ == "__main__":
    main()
