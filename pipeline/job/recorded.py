"""A run's recorded config read back: its ``config.yaml`` artifact (or a file), typed by
today's schema, with the keys added since it was recorded given their old meaning."""

import tempfile
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.job import data
from pipeline.job.config import ADDED_LATER, Config, ConfigError, validate
from pipeline.processes.errors import InputError, first_line
from pipeline.store import tracking
from pipeline.store.model import Training
from pipeline.store.tracking import flatten


def parse_config(text: str, source: str) -> DictConfig:
    """The recorded config, typed by the schema and checked; InputError if it is not one.

    A recorded config has every key of the schema of its day: a key added since
    (ADDED_LATER) may be missing and takes the value that means the behaviour from before
    it; any other missing key is refused. The error never quotes the file: it may be
    anything (a path given by mistake), and its lines would end up in logs.
    """
    try:
        recorded = OmegaConf.create(text)  # OmegaConf's YAML: 1e-5 is a float
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{source} is not a config: not valid YAML{where}") from None
    keys = (
        set(flatten(OmegaConf.to_container(recorded)))
        if isinstance(recorded, DictConfig)
        else set()
    )
    schema = set(flatten(OmegaConf.to_container(OmegaConf.structured(Config))))
    if not keys & schema:
        raise InputError(f"{source} is not a config: it has none of the config's keys")
    missing = sorted(schema - keys - ADDED_LATER.keys())
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"{source} is not a complete recorded config: it lacks {', '.join(missing[:3])}{more}"
        )
    base = OmegaConf.structured(Config)
    for key, value in ADDED_LATER.items():
        OmegaConf.update(base, key, value, merge=False)
    try:
        cfg = OmegaConf.merge(base, recorded)
    except (OmegaConfBaseException, ValueError) as error:  # an unknown key, a wrong type
        key = getattr(error, "full_key", None)
        where = f" at {key}" if key else ""
        raise InputError(
            f"{source} is not a valid config{where}: {first_line(error, type(error).__name__)}"
        ) from None
    try:
        validate(cfg)
    except ConfigError as error:
        raise InputError(f"{source}: {error}") from None
    return cfg


def recorded_config(client: MlflowClient, run_id: str) -> tuple[DictConfig, str]:
    """The config.yaml of ``run_id`` and the run's experiment id."""
    run = tracking.get_run(client, run_id)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = download_artifacts(
                run_id=run_id,
                artifact_path="config.yaml",
                dst_path=folder,
                tracking_uri=client.tracking_uri,
            )
            text = Path(path).read_text()
        except (MlflowException, OSError):
            raise InputError(f"run {run_id} has no config.yaml artifact to reproduce") from None
    return parse_config(text, f"config.yaml of run {run_id}"), run.info.experiment_id


def config_file(path: str) -> DictConfig:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            f"cannot read config file {path}: {first_line(error, type(error).__name__)}"
        ) from None
    return parse_config(text, path)


def training_of(client: MlflowClient, run_id: str) -> Training:
    """How run ``run_id``'s network was trained, for its registered model: the training set's
    scaler, recomputed from its recorded config (the data set, its split and seed: the very
    scaler it trained with), its hidden activation and its experiment."""
    cfg, experiment_id = recorded_config(client, run_id)
    scaler = data.training_scaler(cfg.dataset, seed=cfg.seed)
    return Training(scaler.mean_, scaler.scale_, cfg.model.activation, experiment_id)
