"""A run's network as an MLflow model: a pyfunc that scales features as in training, then
predicts class probabilities and the label; logged to the run and registered with an alias.

The scaler is recomputed from the run's recorded config.yaml (the data set, its split and
seed), not read from the run: every run ever recorded can be registered, and the data
split is seeded, so it is the very scaler the run trained with.
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    ErrorCode,
)
from mlflow.pyfunc import PythonModel

from pipeline.nn import L_model_forward
from pipeline.nn.forward import labels_of
from pipeline.processes.errors import InputError
from pipeline.store import tables, tracking

ALIAS = "champion"
MODEL_PATH = "model"  # the model's folder among the run's artifacts
PARAMETERS = "parameters.npz"
LABEL = "label"
# Given, so logging never starts a subprocess to infer them: what the model imports.
REQUIREMENTS = ["mlflow", "numpy", "pandas", "scipy"]


def feature_columns(n_x: int) -> list[str]:
    return [f"x{i}" for i in range(n_x)]


def probability_columns(n_classes: int) -> list[str]:
    return [f"p{k}" for k in range(n_classes)]


class Network(PythonModel):
    """features (columns x0, x1, ...) -> probabilities p0..p{K-1} and the predicted label."""

    def load_context(self, context) -> None:
        with np.load(context.artifacts["network"]) as stored:
            arrays = dict(stored)
        self.mean, self.scale = arrays.pop("scaler_mean"), arrays.pop("scaler_scale")
        self.parameters = arrays
        self.activation = context.model_config["activation"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        columns = feature_columns(len(self.mean))
        x = model_input[columns].to_numpy(dtype=np.float64)
        check_finite(x, columns, model_input.index)
        X = ((x - self.mean) / self.scale).T  # StandardScaler.transform's arithmetic
        AL, _ = L_model_forward(X, self.parameters, hidden_activation=self.activation)
        probabilities = np.vstack([1 - AL, AL]) if AL.shape[0] == 1 else AL
        frame = pd.DataFrame(probabilities.T, columns=probability_columns(len(probabilities)))
        frame[LABEL] = labels_of(AL)[0]
        return frame


def check_finite(x: np.ndarray, columns: list[str], rows: pd.Index) -> None:
    """Refuse features that are not finite numbers (NaN, None, infinite) as MLflow's schema
    enforcement refuses a missing column: they would give NaN probabilities and label 0."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    where = []
    for j in np.flatnonzero(bad.any(axis=0)):
        at = [str(rows[i]) for i in np.flatnonzero(bad[:, j])]
        more = f" and {len(at) - 3} more" if len(at) > 3 else ""
        where.append(f"{columns[j]} at row{'s' * (len(at) > 1)} {', '.join(at[:3])}{more}")
    raise MlflowException(
        f"Model input is not finite (NaN, None or infinite) in {'; '.join(where)}: "
        "every feature must be a finite number",
        error_code=INVALID_PARAMETER_VALUE,
    )


@dataclass
class Registered:
    name: str
    version: str
    run_id: str


def best_run_id(client: MlflowClient) -> str:
    """The best run of the latest sweep, as the sweep itself named it (tag best_run_id)."""
    sweep = tables.latest_sweep(client)
    if sweep is None or tracking.SWEEP_TAG not in sweep.data.tags:
        raise InputError(f"no sweep in {client.tracking_uri}: run `make sweep` first")
    best = sweep.data.tags.get("best_run_id")
    if best is None:
        raise InputError(f"{sweep.info.run_name} has no best run (none finished, or it runs)")
    return best


def network_arrays(client: MlflowClient, run_id: str, folder: Path) -> dict[str, np.ndarray]:
    """The run's parameters.npz, W1, b1, ...; InputError if it has none."""
    try:
        path = client.download_artifacts(run_id, PARAMETERS, str(folder))
        with np.load(path) as stored:
            return dict(stored)
    except (MlflowException, OSError, ValueError):
        raise InputError(f"run {run_id} has no {PARAMETERS}: nothing to register") from None


@dataclass
class Training:
    """How a run's network was trained, from its recorded config: what the model needs."""

    scaler_mean: np.ndarray  # the training set's StandardScaler
    scaler_scale: np.ndarray
    activation: str  # the hidden layers'
    experiment_id: str


def register(
    client: MlflowClient, run_id: str, training_of: Callable[[str], Training]
) -> Registered:
    """Log run ``run_id``'s network to it as a pyfunc model and register it under its
    experiment's name with the alias ``champion``; ``training_of(run_id)`` reads how it was
    trained (``job.recorded.training_of``). Checks everything before writing."""
    run = tracking.get_run(client, run_id)
    if run.info.status != "FINISHED":
        raise InputError(
            f"run {run_id} is {run.info.status}: only a FINISHED run's network is registered"
        )
    with tempfile.TemporaryDirectory() as folder:
        arrays = network_arrays(client, run_id, Path(folder))
        training = training_of(run_id)
        if training.scaler_mean.shape[0] != arrays["W1"].shape[1]:
            raise InputError(f"run {run_id}: {PARAMETERS} does not fit its config's data set")
        network = Path(folder) / "network.npz"
        np.savez(
            network, **arrays, scaler_mean=training.scaler_mean, scaler_scale=training.scaler_scale
        )
        model = Path(folder) / MODEL_PATH
        n_classes = max(2, arrays[f"W{len(arrays) // 2}"].shape[0])
        save_model(model, network, training.activation, training.scaler_mean, n_classes)
        name = client.get_experiment(training.experiment_id).name
        refused = f"register run {run_id} as model {name!r}"
        tracking.check_writable(client, training.experiment_id, refused)
        client.log_artifacts(run_id, str(model), MODEL_PATH)
    with tracking.allowed(client.tracking_uri, refused):  # a model another user manages
        ensure_registered_model(client, name)
        source = f"{run.info.artifact_uri}/{MODEL_PATH}"
        version = client.create_model_version(name, source, run_id=run_id).version
        client.set_registered_model_alias(name, ALIAS, version)
    return Registered(name, str(version), run_id)


def save_model(
    path: Path, network: Path, activation: str, mean: np.ndarray, n_classes: int
) -> None:
    """The pyfunc model in ``path``, with its signature and its requirements given."""
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import save_model as save_pyfunc
    from mlflow.types import ColSpec, Schema

    columns = feature_columns(len(mean))
    features = Schema([ColSpec("double", name) for name in columns])
    outputs = [ColSpec("double", name) for name in probability_columns(n_classes)]
    save_pyfunc(
        str(path),
        python_model=str(Path(__file__).with_name("model_code.py")),  # code, not a pickle
        artifacts={"network": str(network)},
        model_config={"activation": activation},
        signature=ModelSignature(features, Schema([*outputs, ColSpec("long", LABEL)])),
        input_example=pd.DataFrame(mean[None], columns=columns),  # the training set's mean
        pip_requirements=REQUIREMENTS,
        code_paths=[str(Path(__file__).parent)],  # the model carries pipeline/ to load anywhere
    )


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
