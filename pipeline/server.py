"""``python -m pipeline.server``: a shared MLflow tracking server (``make server``).

MLflow's own ``mlflow server`` with its backend store (SQLite by default, or PostgreSQL)
and proxied artifacts; its address is printed once it answers. Runs go there with
``tracking=server``.
"""

import argparse
import sys
from pathlib import Path

from pipeline.processes import entry
from pipeline.store import tracking
from pipeline.store.web import add_address_arguments, address, serve

DEFAULT_BACKEND = "sqlite:///mlruns/server/mlflow.db"
DEFAULT_ARTIFACTS = "mlruns/server/artifacts"


@entry.point()
def main(argv: list[str] | None = None) -> int:
    """The server of the command line ``argv``; its exit code once it ends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_address_arguments(parser)
    parser.add_argument("--backend-store-uri", default=DEFAULT_BACKEND, help="%(default)s")
    parser.add_argument("--artifacts-destination", default=DEFAULT_ARTIFACTS, help="%(default)s")
    parser.add_argument("--workers", type=int, default=2, help="%(default)s")
    args = parser.parse_args(argv)
    host, port = address(args)
    if args.backend_store_uri.startswith(tracking.SQLITE):
        Path(args.backend_store_uri.removeprefix(tracking.SQLITE)).parent.mkdir(
            parents=True, exist_ok=True
        )

    def announce(base: str) -> None:
        print(f"MLflow tracking server on {base} (store {args.backend_store_uri}).", flush=True)
        print(f"Runs go there with tracking=server; the UI: {tracking.experiments_url(base)}")

    command = [sys.executable, "-m", "mlflow", "server", "--host", host]
    command += ["--port", str(port), "--workers", str(args.workers)]
    command += ["--backend-store-uri", args.backend_store_uri, "--serve-artifacts"]
    command += ["--artifacts-destination", args.artifacts_destination]
    return serve(command, host, port, announce)


if __name__ == "__main__":
    sys.exit(entry.run(main))
