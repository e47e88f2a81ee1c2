"""MLflow's web servers (``mlflow ui``, ``mlflow server``) run as a child process: their
address checked, announced once they answer, and stopped with this process. A problem is
an InputError, one line for the command line to print."""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from errno import EADDRNOTAVAIL

from pipeline.processes.errors import InputError
from pipeline.store import tracking

STARTUP_SECONDS = 120


def add_address_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", help=f"default $PORT or {tracking.UI_PORT}")  # see `address`
    parser.add_argument("--host", default=tracking.UI_HOST, help="default %(default)s")


def address(args: argparse.Namespace) -> tuple[str, int]:
    """(host, port) to serve on, from the command line or $PORT; InputError if the port is
    not one (1 to 65535) or is taken, or the host is not this machine's."""
    given = "--port" if args.port is not None else "PORT"
    text = args.port if args.port is not None else os.environ.get("PORT") or ""  # make: PORT=''
    port = tracking.UI_PORT
    if text:
        port = int(text) if text.isascii() and text.isdigit() else 0
        if not 1 <= port <= 65535:
            raise InputError(f"{given}={text} is invalid: a port is a number from 1 to 65535")
    check_port_free(args.host, port)
    return args.host, port


def check_port_free(host: str, port: int) -> None:
    """InputError if something already listens on host:port, or if ``host`` is not an
    address of this machine."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except (OSError, UnicodeError) as error:  # UnicodeError: a name too long to look up
            if isinstance(error, socket.gaierror | UnicodeError) or error.errno == EADDRNOTAVAIL:
                why = getattr(error, "strerror", None) or "not a host name"
                raise InputError(f"HOST={host} is not an address of this machine ({why})") from None
            raise InputError(
                f"cannot listen on {host}:{port} ({error.strerror}): choose another with PORT="
            ) from None


# MLflow's server also starts a job runner and its Huey consumers, processes importing MLflow,
# for GenAI jobs (scorers, trace rollups) that no run here has: seconds more at every start.
WITHOUT_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def serve(command: list[str], host: str, port: int, announce: Callable[[str], None]) -> int:
    """Run ``command`` (an MLflow web server), ``announce`` its address once it answers;
    its exit code once it ends (130 on Ctrl-C; SIGTERM stops it too). InputError if it ends
    or does not answer before it serves."""
    environment = WITHOUT_JOB_RUNNER | os.environ  # the operator's own setting wins
    server = subprocess.Popen(command, stdout=sys.stderr, env=environment)  # stdout: the address
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    base = tracking.ui_address(host, port)
    name = " ".join(command[2:4])  # mlflow ui, mlflow server
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not answers(f"{base}/health"):
            if server.poll() is not None:
                raise InputError(f"{name} stopped (exit code {server.returncode}) before it served")
            if time.monotonic() > deadline:
                server.terminate()
                raise InputError(f"{name} did not answer on {base} within {STARTUP_SECONDS} s")
            time.sleep(0.2)
        announce(base)
        return server.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the server too
        server.wait()
        return 130


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
