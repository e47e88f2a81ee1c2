"""``python -m pipeline.server``: a shared MLflow tracking server (``make server``).

MLflow's own ``mlflow server`` with its backend store (SQLite by default, or PostgreSQL)
and proxied artifacts; its address is printed once it answers. Runs go there with
``tracking=server``. Beyond the loopback (or with ``--auth``) it runs MLflow's basic-auth
app: users, an admin, per-experiment permissions (pipeline/store/auth.py). It answers only
to the Host names it serves (``--allowed-hosts``).
"""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from pipeline.processes import entry
from pipeline.processes.errors import InputError
from pipeline.store import auth, tracking
from pipeline.store.web import add_address_arguments, address, serve

DEFAULT_BACKEND = "sqlite:///mlruns/server/mlflow.db"
DEFAULT_ARTIFACTS = "mlruns/server/artifacts"
# What each optional part of the server imports, and the extra that brings it.
NEEDS = {
    "auth": ("flask_wtf", "mlflow[auth]"),
    "metrics": ("prometheus_flask_exporter", "prometheus-flask-exporter"),
}


@entry.point()
def main(argv: list[str] | None = None) -> int:
    """The server of the command line ``argv``; its exit code once it ends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_address_arguments(parser)
    parser.add_argument("--backend-store-uri", default=DEFAULT_BACKEND, help="%(default)s")
    parser.add_argument("--artifacts-destination", default=DEFAULT_ARTIFACTS, help="%(default)s")
    parser.add_argument("--workers", type=int, default=2, help="%(default)s")
    parser.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        help="MLflow's basic-auth app (default: on beyond the loopback)",
    )
    parser.add_argument(
        "--auth-db-uri", help="the user store (default: SQLite in auth/ beside the server's store)"
    )
    parser.add_argument(
        "--admin-password-file", help=f"the first admin's password (else ${auth.PASSWORD_ENV})"
    )
    parser.add_argument(
        "--default-permission",
        choices=auth.PERMISSIONS,
        default=auth.DEFAULT_PERMISSION,
        help="%(default)s",
    )
    parser.add_argument("--metrics", action="store_true", help="Prometheus metrics on /metrics")
    args = parser.parse_args(argv)
    host, port = address(args)
    command, environment = server_command(args, host, port)

    def announce(base: str) -> None:
        print(f"MLflow tracking server on {base} (store {args.backend_store_uri}).", flush=True)
        print(f"Runs go there with tracking=server; the UI: {tracking.experiments_url(base)}")

    os.environ.update(environment)  # the server's child inherits it: nothing on its argv
    return serve(command, host, port, announce)


def server_command(args: argparse.Namespace, host: str, port: int) -> tuple[list, dict]:
    """``mlflow server``'s command line and the environment it adds; InputError if a part it
    needs is missing."""
    folder = server_folder(args.backend_store_uri, args.artifacts_destination)
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--host", host]
    command += ["--port", str(port), "--workers", str(args.workers)]
    command += ["--backend-store-uri", args.backend_store_uri, "--serve-artifacts"]
    command += ["--artifacts-destination", args.artifacts_destination]
    if not os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS"):  # MLflow's own, if the operator set it
        command += ["--allowed-hosts", ",".join(auth.allowed_hosts(host, port))]
    environment = {}
    if args.auth if args.auth is not None else not auth.is_loopback(host):
        check_installed("auth")
        environment = auth.app_environment(
            folder / "auth", args.auth_db_uri, args.default_permission, args.admin_password_file
        )
        command += ["--app-name", "basic-auth"]
    if args.metrics:
        check_installed("metrics")
        command += ["--expose-prometheus", str(folder / "prometheus")]
    return command, environment


def server_folder(backend: str, artifacts: str) -> Path:
    """Where the server keeps its own files (auth/, prometheus/): beside its SQLite store, else
    beside its artifacts if they are a folder here, else beside the default store."""
    if backend.startswith(tracking.SQLITE):
        return Path(backend.removeprefix(tracking.SQLITE)).parent
    if "://" not in artifacts:
        return Path(artifacts).parent
    return Path(DEFAULT_ARTIFACTS).parent


def check_installed(part: str) -> None:
    module, extra = NEEDS[part]
    if importlib.util.find_spec(module) is None:
        raise InputError(
            f"the server's {part} needs {extra} ({module} is not installed): "
            "make install (the server extra)"
        )


if __name__ == "__main__":
    sys.exit(entry.run(main))
