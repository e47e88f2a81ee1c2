"""Test-only: copied as ``sitecustomize.py`` into a folder on a sweep's PYTHONPATH, it makes
every process it starts pause the first job's run between its last write and its FINISHED
status (tests/test_sweep_survives.py provokes the race of a job's end with its launcher's
death there).

The first process to get there writes its run id to ``$PAUSE_DIR/paused`` and waits until
the sweep's parent run is no longer RUNNING (a watcher ended it around the job), or its
launcher has been gone for ``GRACE_SECONDS`` (a watcher waits for the job), then goes on.
"""

import importlib.abc
import importlib.util
import os
import sys
import time

GRACE_SECONDS = 5.0


def pause(client, run_id: str) -> None:
    try:
        marker = os.open(
            os.path.join(os.environ["PAUSE_DIR"], "paused"), os.O_CREAT | os.O_EXCL | os.O_WRONLY
        )
    except FileExistsError:  # another job paused
        return
    os.write(marker, run_id.encode())
    os.close(marker)
    launcher = os.getppid()
    parent = client.get_run(run_id).data.tags["mlflow.parentRunId"]
    gone_since = None
    while client.get_run(parent).info.status == "RUNNING":
        if os.getppid() != launcher:
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > GRACE_SECONDS:
                return
        time.sleep(0.05)


def patch(module) -> None:
    set_terminated = module.MlflowClient.set_terminated

    def paused_set_terminated(self, run_id, status=None, *args, **kwargs):
        if status in (None, "FINISHED") and "mlflow.parentRunId" in self.get_run(run_id).data.tags:
            pause(self, run_id)
        return set_terminated(self, run_id, status, *args, **kwargs)

    module.MlflowClient.set_terminated = paused_set_terminated


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches MLflow's client as it is imported: importing it here would slow every process."""

    def find_spec(self, name, path, target=None):
        if name != "mlflow.tracking.client":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("PAUSE_DIR"):
    sys.meta_path.insert(0, PatchOnImport())
