"""One job: a composed config in, one MLflow run out.

config -> validate -> data -> train -> params, curves, metrics, artifacts. Used by the
Hydra entry point (``pipeline.train``) and, with a recorded config, by reproduction.
"""

import contextlib
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import ThreadpoolController

from pipeline.job import data as datasets
from pipeline.job.config import (
    LAUNCH_SETTINGS,
    ModelConfig,
    TrainConfig,
    config_digest,
    network_size,
    validate,
)
from pipeline.job.dynamics import Dynamics
from pipeline.job.early_stopping import EarlyStopping
from pipeline.job.loop import Listener, Optimization, Result, layer_dims, train
from pipeline.nn.optimizers import Hyperparameters
from pipeline.processes import slurm
from pipeline.processes.workers import Guard
from pipeline.store import plots, tracking

log = logging.getLogger(__name__)
DIVERGED = "diverged"  # how a diverged run's failure_reason starts


@dataclass
class Outcome:
    run_id: str
    experiment_id: str
    status: str
    result: Result


def run_name(cfg: DictConfig) -> str:
    """What distinguishes runs in a sweep, e.g. d2-w16-lr0.1, or d2-w16-lr0.1-tanh-adam-b64-l2_0.01
    with another activation, optimizer, batch size or L2 than the default."""
    t = cfg.train
    name = f"d{cfg.model.depth}-w{cfg.model.width}-lr{t.learning_rate:.3g}"
    if cfg.model.activation != ModelConfig.activation:
        name += f"-{cfg.model.activation}"
    if t.optimizer != TrainConfig.optimizer:
        name += f"-{t.optimizer}"
    if t.batch_size is not None:
        name += f"-b{t.batch_size}"
    if t.l2 != TrainConfig.l2:
        name += f"-l2_{t.l2:.3g}"
    if t.lr_decay != TrainConfig.lr_decay:
        name += f"-{t.lr_decay}{t.decay_rate:.3g}"
    return name


def optimization(train: DictConfig) -> Optimization:
    """How the job's epochs update the parameters, from its ``train`` config."""
    hyper = Hyperparameters(train.beta, train.beta1, train.beta2, train.epsilon)
    return Optimization(
        train.optimizer, hyper, train.batch_size, train.l2, train.lr_decay, train.decay_rate
    )


@functools.cache
def blas_libraries() -> ThreadpoolController:
    """The BLAS libraries loaded in this process, looked up once (about 5 ms, at each
    ``threadpool_limits``): numpy, imported above, has loaded its own."""
    return ThreadpoolController()


def run_job(
    cfg: DictConfig,
    *,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    experiment_id: str | None = None,
    listeners: Sequence[Listener] = (),
    guard: Guard | None = None,
) -> Outcome:
    """Validate ``cfg`` (raises ConfigError before anything is created), train, and track.

    ``listeners`` are called at each logged point after the job's own (a search's pruning);
    a run one of them cuts short (Stop.killed) ends KILLED, tagged ``killed_reason`` (and
    ``pruned_at`` if it was pruned).
    ``guard``: a sweep's worker's, whose watcher may end the run (stopping.watch_launcher).
    """
    validate(cfg)
    data = datasets.load(cfg.dataset, seed=cfg.seed, dtype=cfg.train.dtype)
    dims = layer_dims(data.n_x, cfg.model.depth, cfg.model.width, data.n_y)

    client = tracking.connect(tracking.tracking_uri(cfg.tracking.uri))
    experiment = experiment_id or tracking.experiment_id(client, cfg.tracking.experiment)
    tags = {**(tags or {}), "config_digest": config_digest(cfg)}  # equal digests, equal curves
    guard = tracking.RunGuard(guard)
    run_id = guard.start_run(client, experiment, run_name(cfg), tags, parent_run_id)
    # a stop ends the run KILLED; where it is Slurm's, its killed_reason says why
    with guard.run_status(client, run_id, slurm.stop_reason) as outcome:
        tree = OmegaConf.to_container(cfg, resolve=True)
        for key in LAUNCH_SETTINGS:  # a search's or sweep's settings: its parent's, not a job's
            tree.pop(key, None)
        params = tracking.flatten(tree)
        params |= {
            "layer_dims": dims,
            "n_parameters": network_size(data.n_x, cfg.model.depth, cfg.model.width, data.n_y)[0],
            "n_train": data.X_train.shape[1],
            "n_val": 0 if data.X_val is None else data.X_val.shape[1],
            "n_test": data.X_test.shape[1],
        }
        tracking.log_params(client, run_id, params)
        # first: a run that crashes can still be reproduced from it
        client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tracking.log_dataset(client, run_id, cfg.dataset.name, data.X_train, data.Y_train)

        live = tracking.LiveCurves(client, run_id, cfg.tracking.flush_seconds)
        # before the live curves: a point's dynamics go in the same batch as its costs
        dynamics = Dynamics(cfg.train.learning_rate, live.keep) if cfg.tracking.dynamics else None
        job_listeners: list[Listener] = [dynamics, live] if dynamics else [live]
        if cfg.train.patience:
            job_listeners.append(EarlyStopping(cfg.train.patience, cfg.train.min_delta))
        try:
            with blas_libraries().limit(limits=cfg.train.blas_threads, user_api="blas"):
                result = train(
                    data,
                    dims,
                    activation=cfg.model.activation,
                    init=cfg.model.init,
                    learning_rate=cfg.train.learning_rate,
                    iterations=cfg.train.iterations,
                    log_every=cfg.train.log_every,
                    seed=cfg.seed,
                    listeners=[*job_listeners, *listeners],
                    optimization=optimization(cfg.train),
                )
        except BaseException:  # Ctrl-C or an error: the points so far go to the store first
            with contextlib.suppress(Exception):  # what ends the run is the first error
                live.flush()
            raise
        outcome["results"] = partial(record, client, run_id, cfg, data, result, live, dynamics)
        if result.diverged_at is not None:
            outcome["status"] = "FAILED"
        elif result.killed:
            outcome["status"] = "KILLED"
    return Outcome(run_id, experiment, outcome["status"], result)


def record(
    client, run_id: str, cfg: DictConfig, data, result: Result, live, dynamics: Dynamics | None
) -> None:
    """The curves' points not sent yet (``live``: tracking.LiveCurves), final metrics, tags
    and artifacts of a finished or diverged training, batched."""
    final = {"train_seconds": result.seconds}
    tags = {}
    title = f"{cfg.dataset.name} {run_name(cfg)}"
    cost_figure = plots.cost_curves(result.steps, result.curves, title)
    files = {
        "cost_curve.png": partial(plots.save_png, cost_figure),
    }
    if dynamics and dynamics.steps:
        figure = plots.layer_gradients(dynamics.steps, dynamics.grad_norms, title)
        files["dynamics.png"] = partial(plots.save_png, figure)
    if result.diverged_at is None:
        final |= {"train_accuracy": result.train_accuracy, "test_accuracy": result.test_accuracy}
        if "val_cost" in result.curves:  # else test_cost is a curve, its last point the final
            final |= {"val_accuracy": result.val_accuracy, "test_cost": result.test_cost}
        files["parameters.npz"] = lambda path: np.savez(path, **result.parameters)
        if data.n_x == 2:
            labels = data.Y_train.argmax(axis=0) if data.n_y > 1 else data.Y_train[0]
            boundary = plots.decision_boundary(
                data.X_train, labels, result.parameters, cfg.model.activation, title
            )
            files["decision_boundary.png"] = partial(plots.save_png, boundary)
    else:
        tags["failure_reason"] = f"{DIVERGED}: cost not finite at iteration {result.diverged_at}"
        log.warning("%s: %s", run_name(cfg), tags["failure_reason"])
    if result.stopped_at is not None:
        final |= {"stopped_at": result.stopped_at}
    if result.killed:
        tags[tracking.KILLED_REASON] = result.stop_reason
    if result.pruned:
        tags[tracking.PRUNED_AT] = result.stopped_at
    if result.best_iteration is not None:
        final |= {"best_iteration": result.best_iteration}
    live.finish(final, tags, result.final_step)
    tracking.log_files(client, run_id, files)
