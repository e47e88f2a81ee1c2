"""make report: one row per job with the runs' own values, plots, and the parent's artifacts."""

import hashlib
import shutil

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline import report as report_command
from pipeline.job.run import run_job
from tests.helpers import call_main, parents_and_children, run_cli

pytestmark = pytest.mark.slow
FILES = ["accuracy_heatmap.png", "cost_curves.png", "runs.csv", "runs.md"]
PAGE = {"importance.json", "report.html", "curves.png"}  # the sweep's page (test_sweep_page)
FIGURES = {"importance.png", "marginals.png", "pairs.png", "dynamics_by_depth.png"}  # if any


def assert_report_files(names) -> None:
    """The report's files: FILES, the page's, and no other than the figures it may draw."""
    names = set(names)
    assert set(FILES) | PAGE <= names and names <= set(FILES) | PAGE | FIGURES, names


@pytest.fixture(scope="session")  # once in an xdist worker, whichever tests it runs between
def swept(tmp_path_factory):
    """A 2 x 2 sweep with one diverging job, in a fresh store, on a small noisy data set
    where the best run by validation accuracy is not the best by test accuracy."""
    folder = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{folder / 'store' / 'mlflow.db'}"
    done = run_cli(
        "pipeline.train",
        "-m",
        "sweep=default",
        f"tracking.uri={uri}",
        "dataset.n_samples=200",
        "dataset.noise=0.3",
        "train.iterations=60",
        "train.log_every=5",
        "model.depth=1,3",
        "model.width=64",
        "train.learning_rate=1.0,30",
        "hydra.launcher.n_jobs=1",  # one process: what is tested is what the sweep records
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, uri, done.stdout


def best(runs, part):
    """The run with the best accuracy on ``part`` (val or test), then the lowest cost."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    return max(
        finished,
        key=lambda r: (r.data.metrics[f"{part}_accuracy"], -r.data.metrics[f"{part}_cost"]),
    )


def test_the_sweep_and_the_report_rank_by_validation_not_test(swept, capfd):
    folder, uri, stdout = swept
    client = MlflowClient(uri)
    (parent,), children = parents_and_children(client)
    by_val, by_test = best(children, "val"), best(children, "test")
    assert by_val.info.run_name != by_test.info.run_name  # the case this test is about
    assert by_test.data.metrics["test_accuracy"] > by_val.data.metrics["test_accuracy"]
    winner = by_val.info.run_name
    # the sweep's summary, its best run and description, its metrics
    best_runs = stdout.split("best runs:\n")[1].splitlines()
    assert best_runs[0].split()[0] == "run" and best_runs[1].split()[0] == winner
    assert "val_accuracy" in best_runs[0] and "test_accuracy" in best_runs[0]
    assert parent.data.tags["best_run"] == winner
    assert f"Best run: **{winner}** (validation accuracy" in parent.data.tags["mlflow.note.content"]
    metrics = parent.data.metrics
    assert metrics["best_val_accuracy"] == by_val.data.metrics["val_accuracy"]
    assert metrics["best_run_test_accuracy"] == by_val.data.metrics["test_accuracy"]
    assert "best_test_accuracy" not in metrics  # never chosen by test
    # the report
    done = report(capfd, uri, cwd=folder)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(folder / "reports" / parent.info.run_name / "runs.csv")
    assert table.run.iloc[0] == winner
    assert done.stdout.splitlines()[2].split()[0] == winner  # the first printed row


def report(capfd, uri, *args, cwd):
    """``make report`` of ``args`` on the store ``uri``, as main(argv) in this process."""
    return call_main(capfd, report_command.main, *args, cwd=cwd, env={"MLFLOW_TRACKING_URI": uri})


def test_report_of_the_latest_sweep(swept, capfd):
    folder, uri, _ = swept
    done = report(capfd, uri, cwd=folder)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    (parent,), children = parents_and_children(client)
    children = {r.info.run_name: r for r in children}
    out = folder / "reports" / parent.info.run_name
    assert_report_files(p.name for p in out.iterdir())

    table = pd.read_csv(out / "runs.csv")
    assert sorted(table.run) == sorted(children) and len(table) == 4
    for row in table.itertuples():
        child = children[row.run]
        assert row.status == child.info.status
        assert (row.depth, row.width) == (int(child.data.params["model.depth"]), 64)
        assert row.learning_rate == float(child.data.params["train.learning_rate"])
        assert row.train_cost == child.data.metrics["train_cost"]
        if row.status == "FINISHED":
            for key in ("val_cost", "test_cost", "val_accuracy", "test_accuracy"):
                assert getattr(row, key) == child.data.metrics[key]
    assert table.val_accuracy.iloc[0] == table.val_accuracy.max()  # best first
    assert "FAILED" in set(table.status)  # d3-w64-lr30 diverges and is still reported
    assert (out / "runs.md").read_text().startswith("| run | status | depth |")
    assert (out / "cost_curves.png").read_bytes().startswith(b"\x89PNG")

    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert_report_files(path.removeprefix("report/") for path in logged)
    n_finished = sum(c.info.status == "FINISHED" for c in children.values())
    assert n_finished < 4  # the diverged job is not counted as finished
    counts = f"{parent.info.run_name}: 4 runs, {n_finished} finished, {4 - n_finished} failed"
    assert counts in done.stdout


def test_report_of_a_single_run_and_of_an_experiment(compose_config, store, tmp_path, capfd):
    uri, _ = store
    outcome = run_job(compose_config(f"tracking.uri={uri}", "train=quick"))
    single = report(capfd, uri, "--run", outcome.run_id, "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    assert len(pd.read_csv(tmp_path / "r" / "d2-w16-lr0.1" / "runs.csv")) == 1
    whole = report(capfd, uri, "--experiment", "moons", "--out", str(tmp_path / "e"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert_report_files(p.name for p in (tmp_path / "e" / "moons").iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "feedbeef"], "error: run 'feedbeef' not found"),
        (["--experiment", "nope"], "error: no experiment named 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line(swept, capfd, args, message):
    folder, uri, _ = swept
    env = {"MLFLOW_TRACKING_URI": uri}
    done = call_main(capfd, report_command.main, *args, cwd=folder, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message) and len(done.stderr.strip().splitlines()) == 1


def test_a_read_only_store_is_reported_and_left_as_it_was(swept, read_only, tmp_path):
    """An archived or shared store, read-only, was refused: "cannot be written"."""
    folder, uri, _ = swept
    store = tmp_path / "store"
    shutil.copytree(folder / "store", store)
    names = sorted(p.name for p in store.iterdir())
    read_only(store)
    before = hashlib.sha256((store / "mlflow.db").read_bytes()).hexdigest()
    # a process of its own: this one would keep the store open, and its mount busy
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    done = run_cli("pipeline.report", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr  # not an error: one plain line says it
    (parent,), _ = parents_and_children(MlflowClient(uri))
    report_folder = tmp_path / "reports" / parent.info.run_name
    assert_report_files(f.name for f in report_folder.iterdir())
    (line,) = [line for line in done.stdout.splitlines() if "parent run" in line]
    assert line.startswith("not logged to the sweep's parent run: the store cannot be written (")
    assert hashlib.sha256((store / "mlflow.db").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in store.iterdir()) == names
