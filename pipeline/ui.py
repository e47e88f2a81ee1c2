"""``python -m pipeline.ui``: ``mlflow ui`` on the store, and the latest sweep's runs table.

The UI binds to 127.0.0.1 and serves the same store the jobs write to. An address is
printed only once the UI answers there; a port that is taken is one line and exit 2.
"""

import argparse
import logging
import sys

from pipeline.processes import entry
from pipeline.processes.errors import InputError
from pipeline.store import tracking
from pipeline.store.tables import latest_sweep
from pipeline.store.web import add_address_arguments, address, serve


@entry.point()
def main(argv: list[str] | None = None) -> int:
    """The UI of the command line ``argv``; its exit code once it ends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_address_arguments(parser)
    args = parser.parse_args(argv)
    uri = tracking.tracking_uri()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # a new store's INFO lines
    host, port = address(args)  # before the store is opened
    if not uri.startswith("sqlite:"):  # sqlite:// (in memory) is refused by connect
        raise InputError(f"MLFLOW_TRACKING_URI={uri} is a server: open it in a browser instead")
    client = tracking.connect(uri, read_only=True)  # it works, before the UI starts on it

    def announce(base: str) -> None:
        run = latest_sweep(client)
        if run is None:
            print(f"MLflow UI on {base}; the store {uri} has no runs yet: run `make sweep`")
        else:
            table = tracking.runs_table_url(run.info.experiment_id, base)
            print(f"latest: {run.info.run_name}. Its runs table: {table}", flush=True)

    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port), "--workers", "1"]  # one user
    return serve(command, host, port, announce)


if __name__ == "__main__":
    sys.exit(entry.run(main))
