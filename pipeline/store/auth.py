"""MLflow's basic-auth app for ``make server``: its config file, user store, the first
admin's password and the Flask secret key it needs; the Host names the server answers to;
and, for clients, a server's refusal (MLflow's MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD) as one line that names the user, never the password.

Everything the app keeps lives in one folder beside the server's store (``auth/``): the
``basic_auth.ini`` written at every start, the SQLite user store (unless the team's
database is given) and the secret key, made on the first start and reused.
"""

import ipaddress
import os
import re
import secrets
import socket
import stat
from pathlib import Path

from mlflow.exceptions import MlflowException

from pipeline.processes.errors import InputError

# READ: every teammate sees every run (sharing them is what the server is for) and writes only
# where granted EDIT; an experiment's creator MANAGEs it. NO_PERMISSIONS makes each experiment
# private until granted (docs/server-and-launchers.md).
DEFAULT_PERMISSION = "READ"
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
ADMIN = "admin"
# MLflow checks a password's scrypt hash on every request (~0.1 s of a core): a sweep's workers
# make thousands. Cached per server worker for this long; a changed password or a deleted user
# may thus still get in for up to a minute on another worker (MLflow's basic_auth.ini).
AUTH_CACHE_SECONDS = 60
PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own
SECRET_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"  # MLflow's own: CSRF needs one key for all workers
SECRET_FILE = "flask_secret_key"
USER_ENV, USER_PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
HOW_TO_SET = (
    f"set {PASSWORD_ENV} in the server's environment, or give a file holding it "
    "(make server ADMIN_PASSWORD_FILE=<file>, owner-only), never on the command line"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) serves this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: loopback if every address it has is
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def allowed_hosts(host: str, port: int) -> list[str]:
    """The Host headers the server at host:port answers to (``--allowed-hosts``): the names
    and addresses it is reached by, each with its port. A page on another name (a
    DNS-rebinding attack) gets 403."""
    names = {host, "localhost", "127.0.0.1"}
    if not is_loopback(host):  # and this machine's names, and their addresses
        names |= {socket.gethostname(), socket.getfqdn()}
        for name in list(names):
            names |= {info[4][0] for info in socket.getaddrinfo(name, None)}
    names -= {"0.0.0.0", "::", "::1"}  # no Host header names them
    return sorted(f"[{n}]:{port}" if ":" in n else f"{n}:{port}" for n in names)


def admin_password(password_file: str | None) -> str:
    """The first admin's password: from ``password_file`` if given, else $MLFLOW_AUTH_ADMIN_
    PASSWORD; InputError saying how to set one if neither holds one."""
    if password_file:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as error:
            raise InputError(
                f"cannot read ADMIN_PASSWORD_FILE={password_file} ({error.strerror})"
            ) from None
        if not password:
            raise InputError(f"ADMIN_PASSWORD_FILE={password_file} is empty: {HOW_TO_SET}")
        return password
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise InputError(f"the server's first admin ({ADMIN}) needs a password: {HOW_TO_SET}")
    return password


def secret_key(folder: Path) -> str:
    """The server's Flask secret key, made on its first start in ``folder`` (owner-only) and
    reused; InputError if the file can be read by others."""
    path = folder / SECRET_FILE
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(32))
    except FileExistsError:
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(f"{path} can be read by others: chmod 600 {path}") from None
    return path.read_text().strip()


def app_environment(
    folder: Path, database_uri: str | None, default_permission: str, password_file: str | None
) -> dict[str, str]:
    """The environment ``mlflow server --app-name basic-auth`` starts with: its config file
    (written in ``folder``), the first admin's password and the secret key. The user store is
    ``database_uri`` (the team's database) or SQLite in ``folder``. InputError naming what is
    missing."""
    password = admin_password(password_file)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # the user store and the key are the server's alone
    database = database_uri or f"sqlite:///{(folder / 'basic_auth.db').resolve()}"
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config.resolve()),
        PASSWORD_ENV: password,
        SECRET_ENV: secret_key(folder),
    }


# How MLflow's REST client names a server's refusals: 401 (who are you?) and 403 (not you).
UNAUTHENTICATED, PERMISSION_DENIED = "UNAUTHENTICATED", "PERMISSION_DENIED"


def refusal(error: BaseException, uri: str, what: str) -> str | None:
    """One line if ``error`` is the tracking server at ``uri`` refusing this process's user
    (``what``: what it was doing), naming the user, never the password; else None."""
    code = getattr(error, "error_code", None) if isinstance(error, MlflowException) else None
    if code not in (UNAUTHENTICATED, PERMISSION_DENIED):
        return None
    user = os.environ.get(USER_ENV)
    if code == PERMISSION_DENIED:
        return (
            f"the tracking server {uri} refused to let user {user!r} {what}: ask the team lead "
            "for EDIT on it (docs/server-and-launchers.md)"
        )
    if not user or not os.environ.get(USER_PASSWORD_ENV):
        return f"the tracking server {uri} asks who you are: set {USER_ENV} and {USER_PASSWORD_ENV}"
    return (
        f"the tracking server {uri} did not let user {user!r} in (unknown user or wrong "
        f"password): check {USER_ENV} and {USER_PASSWORD_ENV}"
    )


def hidden_password(text: str) -> str:
    """``text`` (a URL, or overrides that hold one) fit to print or record: the password in a
    URL's user part or in its ``password=`` parameter as ***. Up to a URL's last @: a password
    may hold / or @, and hiding too much is better than showing it."""
    text = re.sub(r"(://[^:/@\s]*:)\S*@", r"\1***@", text)
    return re.sub(r"(password=)[^&\s]*", r"\1***", text, flags=re.IGNORECASE)


def password_in_uri(uri: str) -> str | None:
    """Why the tracking server's ``uri`` cannot be used if it holds a password (it would be
    recorded with the config and the overrides: MLflow's variables carry it), else None."""
    if not uri.startswith(("http:", "https:")) or hidden_password(uri) == uri:
        return None
    return (
        f"tracking.uri={hidden_password(uri)} holds a password, which would be recorded with "
        f"the runs: give the user in {USER_ENV} and the password in {USER_PASSWORD_ENV}"
    )
