"""MLflow's web servers (``mlflow ui``, ``mlflow server``) run as a child process: their
address checked, announced once they answer, and stopped with this process."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from pipeline.processes.errors import fail
from pipeline.store import tracking

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
