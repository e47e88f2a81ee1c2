"""Stores that cannot be used, as a hostile user or a broken machine makes them: a database in
memory, a PostgreSQL that does not answer or refuses, a store whose error is long. Each is
one line on stderr (``error: ...``), a non-zero exit and no traceback.

The entry points run in this process (``main(argv)``), the stores are real.
"""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline import register, report, reproduce, search, train, ui
from pipeline.job.run import run_job
from pipeline.processes.errors import shortened
from pipeline.store import tracking
from tests.helpers import ROOT, all_runs, assert_one_error_line, call_main, free_port, run_cli

QUICK = ["train.iterations=40", "train.log_every=4"]


# ---- a database in memory -------------------------------------------------------------------

IN_MEMORY = {
    "train": (train.main, ["tracking.uri=sqlite://", *QUICK]),
    "sweep": (train.main, ["-m", "tracking.uri=sqlite://", *QUICK, "model.depth=1,2"]),
    "search": (search.main, ["tracking.uri=sqlite://", *QUICK, "model.depth=range(1,3)"]),
    "report": (report.main, ["--tracking-uri", "sqlite://"]),
    "reproduce": (reproduce.main, ["0a1b", "--tracking-uri", "sqlite://"]),
    "register": (register.main, ["best", "--tracking-uri", "sqlite://"]),
}


@pytest.mark.parametrize("command", [*IN_MEMORY, "ui"])
@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:"])
def test_a_store_in_memory_is_refused_by_every_command(capfd, tmp_path, command, uri):
    if command == "ui":
        env = {"MLFLOW_TRACKING_URI": uri}
        done = call_main(capfd, ui.main, "--port", str(free_port()), cwd=tmp_path, env=env)
    else:
        main, argv = IN_MEMORY[command]
        argv = [a.replace("sqlite://", uri) for a in argv]
        done = call_main(capfd, main, *argv, cwd=tmp_path)
    assert_one_error_line(done, f"tracking.uri={uri} is a database in memory", "sqlite:///")
    assert "FINISHED" not in done.stdout
    assert sorted(os.listdir(tmp_path)) == []  # no Hydra outputs, no store


# ---- PostgreSQL -----------------------------------------------------------------------------


def test_a_database_server_that_does_not_answer_is_one_line(capfd, tmp_path):
    uri = f"postgresql://u@127.0.0.1:{free_port()}/db"  # nothing listens there
    for sweep in ([], ["-m", "model.depth=1,2"]):
        done = call_main(capfd, train.main, *sweep, f"tracking.uri={uri}", *QUICK, cwd=tmp_path)
        assert_one_error_line(done, f"the store {uri} cannot be used", "Connection refused")
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.slow
def test_a_database_server_that_is_silent_is_one_line(tmp_path):
    with socket.socket() as silent:  # connections wait in its queue: nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db"
        done = run_cli(
            "pipeline.train",
            f"tracking.uri={uri}",
            *QUICK,
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT)},
            timeout=120,
        )
    assert_one_error_line(done, f"the store {uri} cannot be used", "timeout expired")
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize(
    ("mistake", "reason"),
    [("role", 'role "nobody" does not exist'), ("database", 'database "nosuch" does not exist')],
)
def test_a_database_that_refuses_is_one_line(capfd, postgres, mistake, reason):
    uri = postgres(f"refusing_{mistake}")
    if mistake == "role":
        uri = uri.replace("postgres:@", "nobody:@")
    else:
        uri = uri.replace("/refusing_database?", "/nosuch?")
    done = call_main(capfd, report.main, "--tracking-uri", uri)
    assert_one_error_line(done, f"the store {uri} cannot be used", reason)


# ---- whole lines ----------------------------------------------------------------------------


def test_a_file_store_s_error_is_whole(tmp_path):
    uri = (tmp_path / "filestore").as_uri()
    with pytest.raises(tracking.StoreError) as refused:
        tracking.connect(uri)
    line = str(refused.value)
    assert f"the store {uri} cannot be used" in line
    assert "See htt" not in line and line.endswith(tracking.ELSEWHERE)
    reason = line.split("(", 1)[1].rsplit("): ", 1)[0]
    assert reason.endswith(".")  # whole sentences


def test_a_long_message_is_shortened_between_words_never_inside_a_url():
    url = "https://mlflow.org/docs/latest/self-hosting/migrate-from-file-store"
    text = "word " * 55 + f"see {url} for more"
    short = shortened(text, 300)
    assert len(short) <= 300 and short.endswith(" ...")
    assert url not in short and "https" not in short  # the URL whole, or not at all
    assert shortened("First sentence. " + "x" * 400) == "First sentence."
    assert shortened("short enough") == "short enough"


# ---- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """fill(room_kb) -> a folder on a real 8 MB tmpfs, filled but for about ``room_kb`` KB by
    the file it returns too; unmounted at the end, even on failure. Skipped, saying why,
    where this machine cannot mount one (mounting needs root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})")

    def fill(room_kb: int) -> tuple[Path, Path]:
        filler = folder / "filler"
        free = shutil.disk_usage(folder).free + (filler.stat().st_size if filler.exists() else 0)
        filler.write_bytes(b"\0" * max(0, free - room_kb * 1024))
        return folder, filler

    try:
        yield fill
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=True)  # a process still in it


@pytest.mark.slow
def test_a_full_disk_mid_sweep_is_one_line_and_the_sweep_resumes_once_freed(small_disk, tmp_path):
    disk, _ = small_disk(2048)
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    tracking.connect(uri)  # the store's schema, before the disk is filled
    _, filler = small_disk(250)  # room for the parent and a job or two, not six
    env = {"PYTHONPATH": str(ROOT)}
    grid = ["model.depth=1,2,3", "model.width=4,8"]
    done = run_cli(
        "pipeline.train", "-m", f"tracking.uri={uri}", *QUICK, *grid, cwd=tmp_path, env=env
    )
    assert_one_error_line(done, "the store's disk is full: ", "RESUME=latest", code=1)
    client = MlflowClient(uri)
    (parent,) = [r for r in all_runs(client) if tracking.SWEEP_TAG in r.data.tags]
    if parent.info.status == "RUNNING":  # only where not even its status could be written
        assert "left RUNNING" in done.stderr
    else:
        assert "ended FAILED" in done.stderr
    filler.unlink()  # space freed
    resumed = run_cli(
        "pipeline.train", "-m", "--resume", "latest", f"tracking.uri={uri}", cwd=tmp_path, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    runs = all_runs(client)
    finished = [
        r.data.tags["config_digest"]
        for r in runs
        if tracking.parent_of(r) and r.info.status == "FINISHED"
    ]
    assert len(finished) == len(set(finished)) == 6  # each job once
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [[], ["-m", "model.depth=1,2"]])
def test_a_full_disk_under_a_single_run_or_a_new_sweep_is_one_line(
    capfd, small_disk, tmp_path, sweep
):
    disk, _ = small_disk(2048)
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    tracking.connect(uri)
    small_disk(0 if sweep else 40)  # a run fills it; a sweep's parent does not fit at all
    done = call_main(capfd, train.main, *sweep, f"tracking.uri={uri}", *QUICK, cwd=tmp_path)
    assert_one_error_line(done, "the store's disk is full")
    assert "FINISHED" not in done.stdout


@pytest.mark.slow
def test_a_full_disk_for_a_report_is_one_line_and_nothing_half_written(
    capfd, store, small_disk, compose_config
):
    uri, _ = store
    run_id = run_job(compose_config(f"tracking.uri={uri}", *QUICK)).run_id
    disk, _ = small_disk(30)  # room for the tables, not for the plots
    done = call_main(capfd, report.main, "--run", run_id, "--tracking-uri", uri, "--out", str(disk))
    assert_one_error_line(done, f"the disk of {disk} is full", "--out")
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no folder, no half a file
