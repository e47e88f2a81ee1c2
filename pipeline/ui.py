"""``python -m pipeline.ui``: ``mlflow ui`` on the store, and the latest sweep's runs table.

The UI binds to 127.0.0.1 and serves the same store the jobs write to. An address is
printed only once the UI answers there; a port that is taken is one line and exit 2.
"""

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from pipeline import process, tracking
from pipeline.errors import fail
from pipeline.results import latest_sweep

STARTUP_SECONDS = 120


def add_address_arguments(parser: argparse.ArgumentParser) -> None:
    port = int(os.environ.get("PORT") or tracking.UI_PORT)  # `make` exports PORT empty if unset
    parser.add_argument("--port", type=int, default=port, help=f"default $PORT or {port}")
    parser.add_argument("--host", default=tracking.UI_HOST, help="default %(default)s")


def check_port_free(host: str, port: int) -> None:
    """Exit 2 with one line if something already listens on host:port."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            fail(f"cannot listen on {host}:{port} ({error.strerror}): choose another with PORT=")


def serve(command: list[str], host: str, port: int, announce: Callable[[str], None]) -> None:
    """Run ``command`` (an MLflow web server), ``announce`` its address once it answers, and
    exit when it does; SIGTERM and Ctrl-C stop it."""
    check_port_free(host, port)
    server = subprocess.Popen(command, stdout=sys.stderr)  # our stdout: the address alone
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    base = tracking.ui_address(host, port)
    name = " ".join(command[2:4])  # mlflow ui, mlflow server
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not answers(f"{base}/health"):
            if server.poll() is not None:
                fail(f"{name} stopped (exit code {server.returncode}) before it served")
            if time.monotonic() > deadline:
                server.terminate()
                fail(f"{name} did not answer on {base} within {STARTUP_SECONDS} s")
            time.sleep(0.2)
        announce(base)
        sys.exit(server.wait())
    except KeyboardInterrupt:  # the terminal sent SIGINT to the server too
        server.wait()
        sys.exit(130)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_address_arguments(parser)
    args = parser.parse_args(argv)
    uri = tracking.tracking_uri()
    if not uri.startswith(tracking.SQLITE):
        fail(f"MLFLOW_TRACKING_URI={uri} is a server: open it in a browser instead")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # a new store's INFO lines
    try:
        client = tracking.connect(uri)  # the store works, before the UI starts on it
    except tracking.StoreError as error:
        fail(error)

    def announce(base: str) -> None:
        run = latest_sweep(client)
        if run is None:
            print(f"MLflow UI on {base}; the store {uri} has no runs yet: run `make sweep`")
        else:
            table = tracking.runs_table_url(run.info.experiment_id, base)
            print(f"latest: {run.info.run_name}. Its runs table: {table}", flush=True)

    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", args.host, "--port", str(args.port), "--workers", "1"]  # one user
    serve(command, args.host, args.port, announce)


if __name__ == "__main__":
    process.skip_final_collection()
    main()
