"""make server with MLflow's basic-auth app: a real `mlflow server --app-name basic-auth` on a
loopback port, on SQLite (on a real PostgreSQL in make test-load), with three real users (the
admin, a viewer, an editor) made through MLflow's own client: who may read, sweep and register,
what a refusal prints, and that no password is recorded anywhere."""

import argparse
import base64
import os
import socket
import stat
import types
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest
from mlflow import MlflowClient

pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth] (the server extra)")
pytest.importorskip("prometheus_flask_exporter", reason="METRICS=1 needs the server extra")

from mlflow.server import get_app_client  # after the skip: it needs flask_wtf

from pipeline import register, report, reproduce, train
from pipeline import server as server_cli
from pipeline.processes.errors import InputError
from pipeline.store import auth
from tests.conftest import ADMIN_PASSWORD, started_server
from tests.helpers import (
    TWO_JOBS,
    assert_one_error_line,
    call_main,
    free_port,
    parents_and_children,
    run_cli,
)

pytestmark = pytest.mark.slow

PASSWORDS = {"admin": ADMIN_PASSWORD, "viewer": "viewer-Pw-41d2b8", "editor": "editor-Pw-93a0f6"}


def credentials(user: str, password: str | None = None) -> dict[str, str]:
    """MLflow's variables for ``user`` (with its own password unless given)."""
    return {auth.USER_ENV: user, auth.USER_PASSWORD_ENV: password or PASSWORDS[user]}


@contextmanager
def as_admin():
    """This process's MLflow clients are the admin within."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in credentials("admin").items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A team's server for the module, on SQLite (its user store beside it), with Prometheus
    metrics: the admin, a viewer (READ, the default) and an editor (EDIT on experiment moons,
    made by the admin). The same app on PostgreSQL is make test-load's basic-auth case."""
    folder = tmp_path_factory.mktemp("team")
    backend = f"sqlite:///{folder / 'server' / 'mlflow.db'}"
    with started_server(folder, backend, True, "METRICS=1") as (base, _, log):
        with as_admin():
            users = get_app_client("basic-auth", tracking_uri=base)
            users.create_user("viewer", PASSWORDS["viewer"])
            users.create_user("editor", PASSWORDS["editor"])
            moons = MlflowClient(base).create_experiment("moons")
            users.grant_user_permission("editor", "experiment", moons, "EDIT")
        yield types.SimpleNamespace(base=base, log=log, folder=folder, moons=moons)


def status(url: str, user: str | None = None, password: str | None = None, host=None) -> int:
    """The HTTP status of GET ``url`` as ``user`` (anonymous if None), with a Host header."""
    headers = {"Host": host} if host else {}
    if user:
        token = base64.b64encode(f"{user}:{password or PASSWORDS[user]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30):
            return 200
    except urllib.error.HTTPError as error:
        return error.code


def test_the_server_lets_in_only_its_users_on_the_names_it_serves(team, tmp_path, capfd):
    search = f"{team.base}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(search) == 401
    assert status(search, "viewer") == 200
    assert status(search, "viewer", "not-the-password") == 401
    assert status(search, "admin", host=f"rebinding.example:{team.base.rsplit(':', 1)[1]}") == 403
    assert status(f"{team.base}/metrics") == 401
    assert status(f"{team.base}/metrics", "admin") == 200

    for env, words in [
        (credentials("editor", "not-the-password"), ["'editor'", "wrong password"]),
        (credentials("mallory", "whatever-Pw"), ["'mallory'", "unknown user"]),
        ({}, [auth.USER_ENV, auth.USER_PASSWORD_ENV]),
    ]:
        done = call_main(capfd, report.main, "--tracking-uri", team.base, cwd=tmp_path, env=env)
        assert_one_error_line(done, team.base, *words)
        assert "not-the-password" not in done.stderr


def test_a_viewer_is_refused_and_an_editor_sweeps_and_registers(team, tmp_path, capfd):
    """The editor's sweep runs in processes of its own (its workers get the credentials);
    the refusals and reads are each command's main(argv), in this process."""
    sweep = ["-m", f"tracking.uri={team.base}", *TWO_JOBS]
    for user in ("viewer", "editor"):  # each sweep's Hydra outputs in a folder of its own
        (tmp_path / user).mkdir()
    viewer = credentials("viewer")
    refused = call_main(capfd, train.main, *sweep, cwd=tmp_path / "viewer", env=viewer)
    assert_one_error_line(refused, "'viewer'", "write to experiment 'moons'")
    with as_admin():
        admin = MlflowClient(team.base)
        assert not admin.search_runs([team.moons])  # refused before the parent run
        assert {e.name for e in admin.search_experiments()} == {"moons", "Default"}

    done = run_cli("pipeline.train", *sweep, cwd=tmp_path / "editor", env=credentials("editor"))
    assert done.returncode == 0, done.stderr[-3000:]
    with as_admin():
        (parent,), children = parents_and_children(admin)
        assert len(children) == 2
        assert {r.info.status for r in [parent, *children]} == {"FINISHED"}
        records = [str(run.to_dictionary()) for run in [parent, *children]]  # params, tags
        for run in [parent, *children]:
            admin.download_artifacts(run.info.run_id, "", str(tmp_path / "downloaded"))
    password = PASSWORDS["editor"].encode()
    assert not [record for record in records if PASSWORDS["editor"] in record]
    files = [p for p in [*tmp_path.rglob("*"), *team.folder.rglob("*")] if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and team.log in files  # and Hydra's own
    assert not [p for p in files if password in p.read_bytes()]
    assert PASSWORDS["editor"] not in done.stdout + done.stderr

    read = call_main(capfd, report.main, "--tracking-uri", team.base, cwd=tmp_path, env=viewer)
    assert read.returncode == 0, read.stderr[-3000:]  # a viewer reads; its report stays here
    assert "not logged to the sweep's parent run" in read.stdout and "'viewer'" in read.stdout
    again = call_main(
        capfd,
        reproduce.main,
        children[0].info.run_id,
        "--tracking-uri",
        team.base,
        cwd=tmp_path,
        env=viewer,
    )
    assert_one_error_line(again, "'viewer'", "reproduce a run")

    best = ["best", "--tracking-uri", team.base]
    refused = call_main(capfd, register.main, *best, cwd=tmp_path, env=viewer)
    assert_one_error_line(refused, "'viewer'", "register run")
    with as_admin():
        assert not admin.search_registered_models()
    registered = call_main(capfd, register.main, *best, cwd=tmp_path, env=credentials("editor"))
    assert registered.returncode == 0, registered.stderr[-3000:]
    with as_admin():
        assert admin.get_model_version_by_alias("moons", "champion").run_id in {
            c.info.run_id for c in children
        }


def test_the_first_admin_needs_a_password_from_the_environment_or_a_file(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv(auth.PASSWORD_ENV, raising=False)
    store = f"sqlite:///{tmp_path}/s.db"
    argv = ["--auth", "--port", str(free_port()), "--backend-store-uri", store]
    refused = call_main(capsys, server_cli.main, *argv)
    assert_one_error_line(refused, auth.PASSWORD_ENV, "ADMIN_PASSWORD_FILE")
    assert not (tmp_path / "auth").exists()

    secret = tmp_path / "admin-password"
    secret.write_text("from-a-File-4e2\n")
    args = argparse.Namespace(
        backend_store_uri=store,
        artifacts_destination="artifacts",
        workers=2,
        auth=None,
        auth_db_uri=None,
        admin_password_file=str(secret),
        default_permission=auth.DEFAULT_PERMISSION,
        metrics=False,
    )
    command, environment = server_cli.server_command(args, "0.0.0.0", 5999)  # beyond the loopback
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert environment[auth.PASSWORD_ENV] == "from-a-File-4e2"
    assert "from-a-File-4e2" not in " ".join(command)
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert f"{socket.gethostname()}:5999" in hosts and "*" not in " ".join(hosts)

    key = tmp_path / "auth" / auth.SECRET_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert environment[auth.SECRET_ENV] == key.read_text()
    again = server_cli.server_command(args, "127.0.0.1", 5999)
    assert "--app-name" not in again[0] and not again[1]  # the loopback: off unless asked
    args.auth = True
    assert server_cli.server_command(args, "127.0.0.1", 5999)[1][auth.SECRET_ENV] == key.read_text()
    os.chmod(key, 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        server_cli.server_command(args, "127.0.0.1", 5999)
