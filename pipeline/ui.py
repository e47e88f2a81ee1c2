"""``python -m pipeline.ui``: print the latest sweep's runs table address, then start ``mlflow ui``.

The UI binds to 127.0.0.1 and serves the same store the jobs write to.
"""

import argparse
import os
import sys

from pipeline import tracking
from pipeline.cli import fail
from pipeline.results import latest_sweep
from pipeline.sweep import UI_ADDRESS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 5000)))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    uri = tracking.tracking_uri()
    if not uri.startswith(tracking.SQLITE):
        fail(f"MLFLOW_TRACKING_URI={uri} is a server: open it in a browser instead")
    address = UI_ADDRESS.format(port=args.port).replace("127.0.0.1", args.host)
    run = latest_sweep(tracking.connect(uri))
    if run is None:
        print(f"the store {uri} has no runs yet: run `make sweep` first")
    else:
        table = tracking.runs_table_url(address, run.info.experiment_id)
        print(f"latest: {run.info.run_name}. Its runs table: {table}", flush=True)
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host]
    command += ["--port", str(args.port), "--workers", "1"]  # one local user
    os.execvp(sys.executable, [sys.executable, "-m", *command])


if __name__ == "__main__":
    main()
