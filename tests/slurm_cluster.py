"""A real single-node Slurm on 127.0.0.1, for the tests (tests/test_slurm.py) and by hand.

Debian's packages (slurm-wlm, munge, MariaDB, slurmdbd), installed once if missing; then
munged (as the munge user), MariaDB, slurmdbd, slurmctld and slurmd, each in the foreground
from files in one temp folder: one node of 2 CPUs, one partition ``debug``, and accounting
through slurmdbd on MariaDB, so that ``sacct`` answers as on a real cluster (or none, with
``accounting=False``: then ``sacct`` fails, as on clusters without it). Stopped at the end:
the jobs cancelled, every daemon and job step gone, the folder removed. Nothing outside the
folder is written, but ``/etc/munge/munge.key`` where it is missing (munge's package makes it).

By hand: ``.venv/bin/python -m tests.slurm_cluster`` starts one, prints the SLURM_CONF to
export in another shell (then ``sinfo``, ``sbatch``, ``squeue``, ``sacct``), and stops it on
Ctrl-C (or SIGTERM).
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests import helpers
from tests.helpers import free_port

PACKAGES = ["slurm-wlm", "munge", "mariadb-server", "slurmdbd"]
COMMANDS = ["munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacct"]
MUNGE_KEY = Path("/etc/munge/munge.key")
PARTITION = "debug"
CPUS = 2
CLUSTER_NAME = "backproplab"
DB_USER, DB_PASSWORD = "slurm", "slurm-test-only"  # a database that lives as long as a test run
STEP_DAEMON = "slurmstepd"


def unavailable() -> str | None:
    """Why no cluster can run here (a reason to skip), or None."""
    if os.geteuid() != 0:
        return "a Slurm cluster needs root (its daemons and munged's key)"
    if not shutil.which("apt-get") and missing_commands():
        return "no Debian packages here (apt-get missing) to install Slurm"
    return None


def missing_commands() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [c for c in COMMANDS if not shutil.which(c, path=path)]


def install() -> float:
    """Debian's Slurm, munge and MariaDB, if any of their commands is missing, without
    starting their services; the seconds it took (0 when all were there)."""
    if not missing_commands():
        return 0.0
    started = time.monotonic()
    quiet = {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    with no_services_started():
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *PACKAGES],
            check=True,
            capture_output=True,
            env=os.environ | quiet,
        )
    return time.monotonic() - started


@contextlib.contextmanager
def no_services_started() -> Iterator[None]:
    """Debian's packages start their services on install unless policy-rc.d says no: it does
    while they install (a container's own policy-rc.d is kept as it was)."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink()


@dataclass
class Cluster:
    """A running cluster: its folder, and the environment its commands need (SLURM_CONF)."""

    folder: Path
    accounting: bool
    daemons: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.folder / "slurm.conf")}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm command (``squeue``, ``scancel``, ``sacct``...) on this cluster; with
        ``check``, RuntimeError with its output if it fails."""
        done = subprocess.run(
            command, env=os.environ | self.env, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}\n{done.stderr}")
        return done

    def queue(self) -> list[str]:
        """The ids of the jobs in the queue (pending, running or completing)."""
        return self.run("squeue", "--noheader", "--format=%i").stdout.split()

    def log(self, daemon: str) -> str:
        path = self.folder / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_until(
    condition, timeout: float, what: str, cluster: Cluster | None = None, every: float = 0.2
) -> None:
    """tests.helpers.wait_until, whose timeout is a RuntimeError here, with the cluster's logs
    (a cluster that does not start is not a failed assertion)."""
    try:
        helpers.wait_until(condition, timeout, every, what)
    except AssertionError as timed_out:
        logs = "" if cluster is None else cluster_logs(cluster)
        raise RuntimeError(f"{timed_out}\n{logs}") from None


def cluster_logs(cluster: Cluster) -> str:
    names = ["munged", "mariadb", "slurmdbd", "slurmctld", "slurmd"]
    return "\n".join(f"--- {n}.log\n{cluster.log(n)[-2000:]}" for n in names)


def answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def start_daemon(cluster: Cluster, name: str, command: list[str], **popen) -> None:
    """``command`` in the foreground, in a session of its own, its output in ``name``.log."""
    with open(cluster.folder / f"{name}.log", "ab") as log:
        daemon = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | cluster.env,
            **popen,
        )
    cluster.daemons.append(daemon)


def start_munged(cluster: Cluster) -> Path:
    """munged as the munge user, its socket in the folder; the socket's path."""
    folder = cluster.folder / "munge"
    folder.mkdir(mode=0o755)
    shutil.chown(folder, "munge", "munge")
    if not MUNGE_KEY.exists():  # munge's package makes it; a machine that lost it gets one
        subprocess.run(["mungekey", "--create", f"--keyfile={MUNGE_KEY}"], check=True)
        shutil.chown(MUNGE_KEY, "munge", "munge")
    socket_path = folder / "munge.socket"
    log = cluster.folder / "munged.log"
    log.touch()
    shutil.chown(log, "munge", "munge")
    start_daemon(
        cluster,
        "munged-stdout",
        [
            "munged",
            "--foreground",
            f"--socket={socket_path}",
            f"--key-file={MUNGE_KEY}",
            f"--log-file={log}",
            f"--pid-file={folder / 'munged.pid'}",
            f"--seed-file={folder / 'munged.seed'}",
        ],
        user="munge",
        group="munge",
        extra_groups=[],
    )
    wait_until(socket_path.exists, 30, "munged's socket", cluster)
    return socket_path


def start_mariadb(cluster: Cluster) -> int:
    """MariaDB in the folder, on 127.0.0.1 and a free port, with a user for slurmdbd; its port."""
    datadir, sock = cluster.folder / "mariadb", cluster.folder / "mariadb.sock"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    start_daemon(
        cluster,
        "mariadb",
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={sock}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-name-resolve",
            f"--pid-file={cluster.folder / 'mariadb.pid'}",
            "--innodb-buffer-pool-size=64M",
            "--skip-log-bin",
        ],
    )
    wait_until(lambda: sock.exists() and answers(port), 60, "MariaDB", cluster)
    grant = (
        f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
        f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'127.0.0.1';"
    )
    subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", grant],
        check=True,
        capture_output=True,
    )
    return port


def start_slurmdbd(cluster: Cluster, munge_socket: Path, db_port: int) -> int:
    """slurmdbd on 127.0.0.1 and a free port, storing into MariaDB; its port."""
    port = free_port()
    conf = cluster.folder / "slurmdbd.conf"
    conf.write_text(
        "\n".join(
            [
                "AuthType=auth/munge",
                f"AuthInfo=socket={munge_socket}",
                "DbdHost=localhost",
                "DbdAddr=127.0.0.1",
                f"DbdPort={port}",
                "SlurmUser=root",
                f"PidFile={cluster.folder / 'slurmdbd.pid'}",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={db_port}",
                f"StorageUser={DB_USER}",
                f"StoragePass={DB_PASSWORD}",
                "StorageLoc=slurm_acct_db",
                "",
            ]
        )
    )
    conf.chmod(0o600)  # slurmdbd refuses a config others can read: it holds the password
    start_daemon(cluster, "slurmdbd", ["slurmdbd", "-D"])  # its conf: beside SLURM_CONF
    wait_until(lambda: answers(port), 60, "slurmdbd", cluster)
    return port


def write_slurm_conf(cluster: Cluster, munge_socket: Path, dbd_port: int | None) -> None:
    host, folder = socket.gethostname().split(".")[0], cluster.folder
    accounting = (
        [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={dbd_port}",
            "JobAcctGatherType=jobacct_gather/linux",
            f"AccountingStoragePass={munge_socket}",
        ]  # munged's socket, to slurmdbd
        if dbd_port
        else [
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
        ]
    )
    (folder / "slurm.conf").write_text(
        "\n".join(
            [
                f"ClusterName={CLUSTER_NAME}",
                f"SlurmctldHost={host}(127.0.0.1)",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                f"AuthInfo=socket={munge_socket}",
                "CredType=cred/munge",
                "SlurmUser=root",
                "SlurmdUser=root",
                "MpiDefault=none",
                "ReturnToService=2",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "JobCompType=jobcomp/none",
                f"StateSaveLocation={folder / 'state'}",
                f"SlurmdSpoolDir={folder / 'spool'}",
                f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                f"SlurmdPidFile={folder / 'slurmd.pid'}",
                *accounting,
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=4096 State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )


def node_idle(cluster: Cluster) -> bool:
    done = cluster.run("sinfo", "--noheader", "--format=%T", check=False)
    return done.returncode == 0 and done.stdout.strip() == "idle"


@contextlib.contextmanager
def slurm_cluster(accounting: bool = True) -> Iterator[Cluster]:
    """A running single-node cluster (installed first if need be); stopped, and its folder
    removed, at the end, even when starting it failed half-way."""
    install()
    # A short folder: munged's and MariaDB's socket paths must stay under 107 characters.
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp")), accounting)
    cluster.folder.chmod(0o755)  # munged (not root) reaches its own folder inside
    try:
        munge_socket = start_munged(cluster)
        dbd_port = None
        if accounting:
            dbd_port = start_slurmdbd(cluster, munge_socket, start_mariadb(cluster))
        for name in ("state", "spool"):
            (cluster.folder / name).mkdir()
        write_slurm_conf(cluster, munge_socket, dbd_port)
        if accounting:  # the cluster known to slurmdbd before slurmctld registers with it
            cluster.run("sacctmgr", "--immediate", "add", "cluster", CLUSTER_NAME)
        start_daemon(cluster, "slurmctld", ["slurmctld", "-D", "-i"])
        start_daemon(cluster, "slurmd", ["slurmd", "-D"])
        wait_until(lambda: node_idle(cluster), 60, "the node to be idle", cluster)
        yield cluster
    finally:
        stop(cluster)


def stop(cluster: Cluster) -> None:
    """Cancel every job, wait for the queue to empty, then end the daemons in reverse order
    of their start, each with SIGTERM (SIGKILL after 30 s), and remove the folder."""
    if any(d.args[0] == "slurmctld" and d.poll() is None for d in cluster.daemons):
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--full", f"--partition={PARTITION}", check=False)
            wait_until(lambda: not cluster.queue(), 60, "the queue to empty")
    for daemon in reversed(cluster.daemons):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
    kill_step_daemons(cluster.folder)
    shutil.rmtree(cluster.folder, ignore_errors=True)


def kill_step_daemons(folder: Path) -> None:
    """The cluster's slurmstepd (the step daemon of a job, which slurmd detaches) and the
    job's processes, if any is left (a daemon died before its jobs ended): those listening
    on a socket in the cluster's spool folder."""
    spool = str(folder / "spool")
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] != STEP_DAEMON:
                continue
            sockets = [c.laddr for c in process.net_connections(kind="unix")]
            if any(str(path).startswith(spool) for path in sockets):
                for child in process.children(recursive=True):
                    child.kill()
                process.kill()


def main() -> None:
    """Start a cluster and keep it until Ctrl-C."""
    reason = unavailable()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        sys.exit(2)
    for signum in (signal.SIGINT, signal.SIGTERM):  # either stops it (also in a background)
        signal.signal(signum, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt), slurm_cluster() as cluster:
        print(f"Slurm cluster up (partition {PARTITION}, {CPUS} CPUs). In another shell:")
        print(f"  export SLURM_CONF={cluster.env['SLURM_CONF']}")
        print("  sinfo; sbatch --wrap 'hostname'; squeue; sacct\nCtrl-C stops it.", flush=True)
        signal.pause()


if __name__ == "__main__":
    main()
