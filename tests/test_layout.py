"""The house's rules, checked: the import layers (import-linter) bite, and Hydra's private
names live in one adapter module, which falls back to Hydra's own path on another release."""

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hydra
from hydra._internal.config_loader_impl import ConfigLoaderImpl

from pipeline.sweeps import hydra_adapter
from tests.helpers import ROOT

ADAPTER = ROOT / "pipeline" / "sweeps" / "hydra_adapter.py"
# Hydra's private names: its _internal package, Singleton state, private functions, the
# joblib launcher plugin's _core module and the submitit launcher plugin's _EXECUTOR.
PRIVATE = re.compile(
    r"hydra\._internal|hydra_plugins\.\w+\._core|\bSingleton\b|\._apply_overrides_to_config"
    r"|\._instances\b|\._EXECUTOR\b"
)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter with the project's contracts on the package ``root / "pipeline"``."""
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-logo", "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_pipeline(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_the_layers_hold_and_a_wrong_import_breaks_them(tmp_path):
    root = copy_of_pipeline(tmp_path)
    assert lint_imports(root).returncode == 0  # the copy as it is: kept
    store = root / "pipeline" / "store" / "tables.py"
    store.write_text(store.read_text() + "\nfrom pipeline.sweeps import grid  # noqa\n")
    done = lint_imports(root)
    assert done.returncode != 0, done.stdout
    assert (
        "BROKEN" in done.stdout and "pipeline.store.tables -> pipeline.sweeps.grid" in done.stdout
    )


def test_the_network_imports_no_hydra_nor_mlflow(tmp_path):
    root = copy_of_pipeline(tmp_path)
    cost = root / "pipeline" / "nn" / "cost.py"
    cost.write_text(cost.read_text() + "\nimport mlflow  # noqa\n")
    done = lint_imports(root)
    assert done.returncode != 0 and "pipeline.nn.cost -> mlflow" in done.stdout, done.stdout


def test_hydra_private_names_live_in_the_adapter_only():
    users = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "pipeline").rglob("*.py")
        if PRIVATE.search(path.read_text())
    }
    assert users == {ADAPTER.relative_to(ROOT).as_posix()}


def test_another_hydra_release_gets_hydras_own_path(monkeypatch, caplog):
    own = hydra_adapter.HYDRA_LOAD_SWEEP_CONFIG
    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", own)  # as a new process has it
    monkeypatch.setattr(hydra, "__version__", "1.4.0")
    hydra_adapter.speed_ups_apply.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            hydra_adapter.reuse_in_this_process()
            hydra_adapter.reuse_in_this_process()
        assert ConfigLoaderImpl.load_sweep_config is own  # not replaced
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "hydra-core 1.4.0" in warnings[0]
    finally:
        hydra_adapter.speed_ups_apply.cache_clear()
