"""backprop-lab: Hydra sweeps of a NumPy backprop network, tracked in MLflow."""

import os

# MLflow 3 sends usage telemetry to a remote service unless told not to; this project
# reaches no network address of its own accord. Set before anything imports mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Our artifacts are a few kilobytes: a progress bar would only clutter the one-line errors.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
