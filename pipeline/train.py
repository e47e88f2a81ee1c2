"""Entry point: ``python -m pipeline.train [overrides]`` runs one job; with ``-m``, a sweep.

    python -m pipeline.train -m [--resume RUN_ID|latest] [--dry-run] [overrides]

Thin wiring. Before Hydra starts, every job's config is checked here, so that a bad
value is one line and exit 2 before anything is created. A sweep's parent run is created
(or, with ``--resume``, reopened) here too, so that a broken store stops the sweep before
any job runs; then Hydra launches the jobs, each of which runs ``job``; then the sweep
ends here, FINISHED, or KILLED on Ctrl-C (exit 130) and SIGTERM (exit 143).
"""

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from functools import partial

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from pipeline.job import config
from pipeline.processes import entry, settings, stopping, workers
from pipeline.processes.errors import InputError, fail, first_line
from pipeline.store import tables, tracking
from pipeline.sweeps import grid, hydra_adapter, parent_run

config.register()
SWEEP_FLAGS = {"--resume": True, "--dry-run": False}  # ours, not Hydra's: takes a value?
RAY_CONNECT_SECONDS = 5.0  # how long a Ray cluster's address gets to answer


@hydra.main(version_base="1.3", config_path=str(config.CONF), config_name="config")
def job(cfg: DictConfig) -> float | None:
    """Hydra's task function, one job: its selection accuracy (validation, or test without a
    validation part); None if it diverged."""
    if workers.state.stopped_by:
        return None  # this worker was stopped: its sweep is ending
    settings.tune_for_jobs()  # also in a sweep's worker processes
    hydra_adapter.reuse_in_this_process()  # for this worker's next jobs
    stopping.catch_stops()
    from pipeline.job.run import run_job  # here: a parallel sweep's launcher never trains

    hydra_cfg = HydraConfig.get()
    tags = {"hydra.overrides": " ".join(hydra_cfg.overrides.task) or "(none)"}
    parent = parent_run.parent_from_env() if hydra_cfg.mode == RunMode.MULTIRUN else None
    if parent:
        stopping.watch_launcher(parent.launcher_pid, partial(parent_run.abandon, parent))
        if config.config_digest(cfg) in parent.done or workers.state.launcher_died:
            return None  # finished in an earlier attempt, or the launcher is gone
        # The parent's store, as the launcher resolved it: a Ray worker has not the launcher's
        # environment ($PORT of tracking=server, $MLFLOW_TRACKING_URI) to resolve it again.
        cfg.tracking.uri = parent.tracking_uri
        tags |= {"sweep_id": parent.run_id, parent_run.JOB_NUMBER_TAG: hydra_cfg.job.num}
        tags[parent_run.WORKER_TAG] = os.getpid()
        # a sweep prints one line per job; per-iteration progress stays in the job's log file
        logging.getLogger("pipeline.job.loop").propagate = False
    try:
        outcome = run_job(
            cfg,
            tags=tags,
            parent_run_id=parent and parent.run_id,
            experiment_id=parent and parent.experiment_id,
            listeners=[stopping.raise_if_stopped],
            guard=workers.state.guard,
        )
    except config.ConfigError as error:  # fail: Hydra prints any exception with its traceback
        if parent:  # a sweep's job: Hydra records it as failed
            raise
        fail(error)
    except Exception as error:
        if not tracking.full_disk(error):
            raise
        if parent:  # the launcher's end of the sweep says it, once, in one line
            number = hydra_cfg.job.num + 1
            print(f"[job {number}] not recorded: the store's disk is full", flush=True)
            return None
        uri = tracking.tracking_uri(cfg.tracking.uri)
        fail(tracking.full_disk_line(uri, "free space, then run it again"))
    if parent:
        parent_run.report_progress(cfg, outcome, parent, hydra_cfg.job.num)
    else:
        result = outcome.result
        print(f"{outcome.status} run {outcome.run_id}: {result.accuracies}, {result.seconds:.1f}s")
        print(f"runs table (after `make ui`): {tracking.runs_table_url(outcome.experiment_id)}")
    return outcome.result.selection_accuracy if outcome.status == "FINISHED" else None


def parse(argv: list[str]):
    """(Hydra's namespace, our sweep flags, the rest for Hydra) of the command line;
    InputError on misuse."""
    flags, rest, i = {}, [], 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag in SWEEP_FLAGS:
            takes_value = SWEEP_FLAGS[flag]
            if takes_value and "=" not in argv[i] and i + 1 >= len(argv):
                raise InputError(f"{flag} needs a value: a sweep's parent run id, or latest")
            value = argv[i].partition("=")[2] or (argv[i + 1] if takes_value else True)
            i += 1 if "=" in argv[i] or not takes_value else 2
            flags[flag.lstrip("-").replace("-", "_")] = value
            continue
        rest.append(argv[i])
        i += 1
    args = hydra_adapter.args_parser().parse_args(rest)
    modes = [args.run, args.multirun, args.cfg, args.info, args.shell_completion]
    if sum(bool(mode) for mode in modes) > 1:  # Hydra would raise with a traceback
        raise InputError("give only one of --run, --multirun, --cfg, --info and --shell-completion")
    given = ", ".join("--" + k.replace("_", "-") for k in flags)
    if flags and not args.multirun:
        raise InputError(f"{given} go with a sweep (-m)")
    if flags and (args.config_path or args.config_dir):  # Hydra alone runs such a sweep
        raise InputError(f"{given} go with a sweep of conf/, without --config-dir or --config-path")
    return args, flags, rest


def run_sweep(args, flags: dict) -> int:
    """Plan and check the sweep, create or reopen its parent, let Hydra launch the jobs, end
    the sweep; returns the exit code. Errors before any job runs are one line and exit 2."""
    name = args.config_name or "config"
    if flags.get("resume"):
        parent_run.check_resume_target(flags["resume"])
    task, plain, hydra_overrides = grid.split_overrides(args.overrides, RunMode.MULTIRUN)
    with initialize_config_dir(config_dir=str(config.CONF), version_base="1.3"):
        cfg = compose(name, overrides=plain, return_hydra_config=True)
        warming = None if flags.get("dry_run") else warm_workers(cfg.hydra.launcher)
        if not flags.get("dry_run"):
            connect_ray(cfg.hydra.launcher)
        uri = tracking.tracking_uri(cfg.tracking.uri)
        if flags.get("resume"):
            client = tracking.connect(uri)
            run = parent_run.find(client, flags["resume"])
            recorded = tables.recorded_jobs(client, run)
            task = parent_run.keep_recorded(run.info.run_name, recorded["argv"], task)
            plain = grid.split_overrides(task)[1] + hydra_overrides
            cfg = compose(name, overrides=plain, return_hydra_config=True)
        if cfg.search.space:
            raise InputError(
                f"sweep={cfg.sweep_name} is a search: run it with make search "
                "(python -m pipeline.search)"
            )
        if flags.get("dry_run") and not flags.get("resume"):  # each job listed as it is checked
            jobs = grid.planned_jobs(cfg.hydra.sweeper, task, cfg.sweep.max_jobs)
            return dry_run(grid.checked_jobs(name, cfg, jobs), len(jobs), cfg)
        # a resumed sweep runs the jobs it recorded, however many
        plan = grid.plan(name, cfg, task, None if flags.get("resume") else cfg.sweep.max_jobs)
        if flags.get("resume") and plan.digests != recorded["digests"]:
            raise InputError(
                f"conf/ has changed since {run.info.run_name} started: its jobs are not the "
                "same today; resume it from the commit it ran (tag git_commit)"
            )
    if flags.get("dry_run"):
        done = parent_run.finished_digests(client, run.info.run_id)
        rows = zip(plan.jobs, plan.names, plan.digests, strict=True)
        return dry_run(rows, sum(digest not in done for digest in plan.digests), cfg, done)
    client = tracking.connect(uri)
    experiment = tracking.experiment_id(client, cfg.tracking.experiment)
    if flags.get("resume"):
        parent = parent_run.join(client, run, n_jobs=plan.n_jobs)
        finished = parent_run.finished_digests(client, run.info.run_id)
        parent.done = sorted(finished & set(plan.digests))
        left = plan.n_jobs - len(parent.done)
        print(
            f"resuming {run.info.run_name}: {plan.n_jobs} jobs, {len(parent.done)} finished, "
            f"{left} to run",
            flush=True,
        )
        if not left:
            parent_run.finish(parent, "FINISHED", 0.0)
            return 0
    else:
        parent_name = parent_run.parent_name(plan.name)
        record = partial(tracking.log_files, client, writers={tables.JOBS_FILE: plan.write_jobs})
        parent = parent_run.create(
            client,
            experiment,
            parent_name,
            plan.argv,
            plan.swept,
            plan.params,
            n_jobs=plan.n_jobs,
            record=record,
        )
        print(f"sweep {parent_name}: {plan.n_jobs} jobs, parent run {parent.run_id}", flush=True)
    hydra_argv = [sys.argv[0], "-m", *task, *hydra_overrides]  # what Hydra launches
    hydra_adapter.skip_job_check()
    hydra_adapter.reuse_in_this_process()  # the jobs a one-worker sweep runs in this process
    wait_for_slurm_jobs_ourselves(cfg.hydra.launcher)
    return launch(parent, hydra_argv, warming)


def dry_run(rows, n_to_run: int, cfg: DictConfig, done: set[str] | None = None) -> int:
    """Print a dry run's job list, a line as each job is checked, and how long the jobs to run
    would take at today's time per job; the exit code (141, as for SIGPIPE, when the reader
    of the list stops reading: ``| head``)."""
    try:
        for line in grid.listing_lines(rows, done):
            print(line, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 128 + signal.SIGPIPE
    estimate = grid.time_estimate(cfg, n_to_run)
    if estimate:
        print(estimate)
    return 0


def warm_workers(launcher: DictConfig) -> threading.Thread | None:
    """With joblib's launcher, start its worker processes now, importing what a job needs,
    while this process checks the jobs and creates the parent: their start overlaps ours.

    Joblib reuses its workers only for the same arguments: these are the launcher's own.
    """
    if "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return None
    from joblib import Parallel, delayed

    arguments = hydra_adapter.joblib_arguments(launcher)
    n_workers = grid.launcher_workers(launcher)

    def warm() -> None:
        # only a head start: a stop kills the workers under it (its error is no one's), and
        # any other failure is the launch's to report, in one line
        with contextlib.suppress(Exception):
            Parallel(**arguments)(delayed(import_job_modules)() for _ in range(n_workers))

    # not a daemon: a process that ends before its launch (a stop, an error) waits for the
    # pool to be whole, else loky's resource tracker warns of the semaphores it was making
    thread = threading.Thread(target=warm, name="warm-workers")
    thread.start()
    return thread


def connect_ray(launcher: DictConfig) -> None:
    """With Ray's launcher on a cluster (``hydra/launcher=ray_cluster``): connect to it here,
    before the parent run is created, so that a missing address or a cluster that does not
    answer is one line (Ray itself retries such an address for about 14 minutes); the
    launcher then finds Ray connected. Connecting before ``launch`` also lets the sweep's stop
    handlers replace the one ``ray.init`` installs, which exits at once on SIGTERM.
    """
    if "RayLauncher" not in str(launcher.get("_target_", "")):
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every job's line, not "[repeated 3x]"
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")  # no dump on a stop
    try:
        init = OmegaConf.to_container(launcher.ray.init, resolve=True)
    except InterpolationResolutionError:  # ray_cluster's ${oc.env:RAY_ADDRESS}
        raise InputError(
            "hydra/launcher=ray_cluster needs the Ray cluster's address: set RAY_ADDRESS=host:port "
            "or hydra.launcher.ray.init.address=host:port"
        ) from None
    address = init.get("address") or os.environ.get("RAY_ADDRESS")
    if address in (None, "auto", "local"):  # the plugin's own `ray`: an instance of its own
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_CONNECT_SECONDS).close()
        import ray

        ray.init(**init)
    except Exception as error:  # refused, unknown host, bad port, or Ray's own refusal
        raise InputError(
            f"the Ray cluster at {address} does not answer ({first_line(error)}): start it "
            "(`ray start --head`), or give its address with RAY_ADDRESS= or "
            "hydra.launcher.ray.init.address="
        ) from None


def wait_for_slurm_jobs_ourselves(launcher: DictConfig) -> None:
    """With submitit's Slurm launcher (``hydra/launcher=slurm``): our subclass of it, which
    waits for its jobs without hanging on one Slurm ended (pipeline.sweeps.slurm_launcher)."""
    if not str(launcher.get("_target_", "")).endswith("submitit_launcher.SlurmLauncher"):
        return
    from pipeline.sweeps import slurm_launcher  # with the cluster extra only

    slurm_launcher.install()


def import_job_modules() -> None:
    """What a sweep's job imports, once per worker: Hydra's job runner, the job, the data sets
    (scikit-learn) and the plots (matplotlib)."""
    import hydra.core.utils  # noqa: F401
    import sklearn.model_selection
    import sklearn.preprocessing  # noqa: F401

    import pipeline.job.run
    import pipeline.train  # noqa: F401

    hydra_adapter.reuse_in_this_process()


def launch(
    parent: parent_run.Parent, hydra_argv: list[str], warming: threading.Thread | None = None
) -> int:
    """Hydra's multirun with the configured launcher, once its workers are warm (``warming``),
    then the parent ended; the exit code."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's errors reach us, to become one line

    def body() -> None:
        if warming:
            warming.join()  # in the body: a stop meanwhile ends the parent KILLED
        launch_until_done(parent, hydra_argv)

    wait = partial(parent_run.wait_for_running_jobs, parent)
    failure = partial(parent_run.failure_line, parent, "sweep")
    return stopping.run_to_end(body, partial(parent_run.finish, parent), wait, failure)


def launch_until_done(parent: parent_run.Parent, hydra_argv: list[str]) -> None:
    """Hydra's multirun; when a worker dies (and its pool with it), its job ends FAILED and
    the jobs still to do are launched again, until none is left."""
    while True:
        sys.argv = [*hydra_argv, parent_run.job_env_override(parent)]
        since_ms = int(time.time() * 1000)
        with workers.DeathWatch() as watch:
            try:
                return job()
            except BrokenProcessPool as error:
                reason = workers.death_reason(error)
                failed = parent_run.fail_dead_job(parent, watch.first_dead(), reason, since_ms)
                if failed is None:
                    raise
        what = "its job FAILED" if failed else "it was between two jobs"
        print(f"a worker died ({reason}): {what}; carrying on", flush=True)


def check_single(args) -> DictConfig | None:
    """The job's config, composed from conf/ and the command line, and validated (ConfigError,
    or Hydra's error, where Hydra would print several lines and exit 1); None for another
    config dir, which Hydra checks itself. ``hydra.*`` is Hydra's own."""
    if args.config_path or args.config_dir:
        return None
    plain = grid.split_overrides(args.overrides)[1]
    with initialize_config_dir(config_dir=str(config.CONF), version_base="1.3"):
        cfg = compose(args.config_name or "config", overrides=plain)
    config.validate(cfg)
    return cfg


@entry.point(config.error_line, tracking.full_disk_error_line)
def main(argv: list[str] | None = None) -> int:
    """A job, or with ``-m`` a sweep, of the command line ``argv``; the exit code."""
    args, flags, rest = parse(sys.argv[1:] if argv is None else argv)
    stopping.catch_stops()
    if args.multirun and not (args.config_path or args.config_dir):
        return run_sweep(args, flags)
    cfg = check_single(args)
    if cfg is not None and not (args.cfg or args.info or args.help or args.shell_completion):
        # the store answers before the job starts: a broken one is one line, no run
        tracking.connect(tracking.tracking_uri(cfg.tracking.uri))
    sys.argv = [sys.argv[0], *rest]  # what Hydra's job() parses
    job()
    return 0


if __name__ == "__main__":
    # Run the importable module's copy: a launcher pickles the job function by reference to
    # pipeline.train then, not by value from __main__, which a worker cannot import.
    from pipeline.train import main as importable_main

    sys.exit(entry.run(importable_main))
