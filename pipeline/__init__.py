"""backprop-lab: Hydra sweeps of a NumPy backprop network, tracked in MLflow."""

import os

# MLflow 3 sends usage telemetry to a remote service unless told not to; this project
# reaches no network address of its own accord. Set before anything imports mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Our artifacts are a few kilobytes: a progress bar would only clutter the one-line errors.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A new store's schema migrations print INFO lines on stderr, before a one-line error or a
# sweep's own lines: MLflow's own setting keeps its warnings and errors only.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
