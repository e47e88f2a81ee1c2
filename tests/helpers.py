"""Helpers for the tests: real subprocesses and real MLflow stores, nothing mocked."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def run_cli(*args, cwd=None, timeout=300, env=None):
    """``python -m <args>`` in a real subprocess; returns the CompletedProcess."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment |= env or {}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def all_runs(client):
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []
