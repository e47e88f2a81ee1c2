"""What mattered in a sweep: each knob's importance for the validation accuracy, and the
sweep's page (report.html) opened in a real headless Chromium, from disk and as the MLflow
UI serves it."""

import itertools
import json
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunData, RunInfo

from pipeline import report as report_command
from pipeline.store import sweep_plots, tables, tracking
from pipeline.sweeps import importance
from tests import browser
from tests.helpers import (
    call_main,
    made_once,
    outside_the_canvas,
    parents_and_children,
    run_cli,
    ui_process,
)

pytestmark = pytest.mark.slow
# the learning rate is the only strong knob: 0.001 barely moves in 300 iterations
SWEEP = [
    "pipeline.train",
    "-m",
    "sweep=default",
    "dataset.n_samples=200",
    "train.iterations=300",
    "train.log_every=50",
    "model.depth=1,2",
    "model.width=8,16",
    "train.learning_rate=0.001,1.0",
    "tracking.dynamics=true",
    "hydra.launcher.n_jobs=1",  # one process: what is tested is what the sweep records
]
NARROW = 570  # px: the MLflow UI's artifact view beside its panels, in a 1,500-px window
MAX_PAGE_BYTES = 2_000_000


@pytest.fixture(scope="session")
def twice(tmp_path_factory):
    """The same sweep run twice in one fresh store, once for all the session's workers: (its
    folder, the store's URI, the two parent runs, oldest first)."""

    def sweep_twice(folder: Path) -> None:
        for _ in range(2):
            done = run_cli(*SWEEP, f"tracking.uri={uri(folder)}", cwd=folder)
            assert done.returncode == 0, done.stderr[-2000:]
            assert "Traceback" not in done.stderr, done.stderr

    def uri(folder: Path) -> str:
        return f"sqlite:///{folder / 'store' / 'mlflow.db'}"

    folder = made_once(tmp_path_factory, "sweep-page-twice", sweep_twice)
    parents, _ = parents_and_children(MlflowClient(uri(folder)))
    return folder, uri(folder), sorted(parents, key=lambda r: r.info.start_time)


def artifact(client: MlflowClient, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_bytes()


def test_the_learning_rate_matters_most_and_a_rerun_ranks_it_identically(twice):
    _, uri, parents = twice
    client = MlflowClient(uri)
    first, second = (json.loads(artifact(client, p.info.run_id, importance.FILE)) for p in parents)
    assert first == second  # seeded, trials in one order: identical, bit for bit
    assert first["evaluator"] == "fANOVA" and first["target"] == "val_accuracy"
    ranked = first["importances"]
    assert list(ranked) == sorted(ranked, key=ranked.get, reverse=True)
    assert set(ranked) == {"model.depth", "model.width", "train.learning_rate"}
    assert next(iter(ranked)) == "train.learning_rate"
    assert ranked["train.learning_rate"] >= 0.8
    assert sum(ranked.values()) == pytest.approx(1, abs=1e-5)
    assert first["log_scale"] == ["train.learning_rate"]  # 0.001 and 1.0; widths 8, 16 not
    parent = client.get_run(parents[0].info.run_id)
    metrics = {k: v for k, v in parent.data.metrics.items() if k.startswith("importance/")}
    assert metrics == {f"importance/{k}": v for k, v in ranked.items()}
    note = parent.data.tags[tracking.NOTE]
    assert "Mattered most: **train.learning_rate** (fANOVA importance" in note
    assert note.startswith("Swept ")  # the sweep's own description is kept, before it


def test_too_little_to_rank_is_said_in_one_line(twice):
    _, uri, parents = twice
    client = MlflowClient(uri)
    runs = tables.latest_attempts(tracking.child_runs(client, parents[0].info.run_id))
    both = [run for p in parents for run in tracking.child_runs(client, p.info.run_id)]
    cases = {
        "3 finished runs, importance needs at least 4": runs[:3],
        "only model.depth was swept": [r for r in both if r.info.run_name.endswith("w8-lr1")],
        "the sweep has no runs": [],
    }
    for why, subset in cases.items():
        found = importance.compute(subset)
        assert found.evaluator is None and found.importances == {} and found.metrics() == {}
        assert found.line.startswith("Nothing to rank: ") and why in found.line, found.line
    same = [r for r in runs if "-lr1" in r.info.run_name]  # all four at one accuracy here
    if len({r.data.metrics["val_accuracy"] for r in same}) == 1:
        assert "every run has the same validation accuracy" in importance.compute(same).line


def test_a_failed_sweep_has_nothing_to_rank_and_still_a_page(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    done = run_cli(
        "pipeline.train",
        "-m",
        "sweep=default",
        f"tracking.uri={uri}",
        "train=quick",
        "model.depth=3",
        "model.width=64",
        "train.learning_rate=50,80",
        "hydra.launcher.n_jobs=1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (parent,), _ = parents_and_children(MlflowClient(uri))
    client = MlflowClient(uri)
    found = json.loads(artifact(client, parent.info.run_id, importance.FILE))
    assert found["importances"] == {}
    assert "Nothing to rank: no run finished with a validation accuracy" in found["line"]
    page = artifact(client, parent.info.run_id, "report.html").decode()
    assert "Nothing to rank" in page and "2 failed" in page


# -- the page in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    why = browser.unavailable()
    if why:
        pytest.skip(why)
    with browser.chromium() as launched:
        yield launched


def open_page(chromium, url: str, width: int, in_ui: bool = False) -> dict:
    """The page at ``url`` in a window ``width`` px wide (``in_ui``: the MLflow UI's
    artifact view at ``url``, the page in its frame): the page's console errors, the requests
    it made, each image's decoded width and right edge, how wide its document is, and the
    text its elements cut off."""
    page = chromium.new_page(viewport={"width": width, "height": 900})
    errors, requests = [], []

    def ours(url: str) -> bool:  # the page's own, not the MLflow UI's around it
        return url.startswith("blob:") or not in_ui

    def console(message) -> None:
        if message.type == "error" and ours(message.location.get("url", "")):
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: in_ui or errors.append(str(error)))
    page.on("request", lambda request: ours(request.frame.url) and requests.append(request.url))
    try:
        page.goto(url, wait_until="load")
        frame = page.main_frame
        if in_ui:  # the UI fetches the artifact and shows it in a sandboxed frame
            page.wait_for_selector("iframe", timeout=120_000)
            frame = next(f for f in page.frames if f.url.startswith("blob:"))
            frame.wait_for_load_state("load")
        images = frame.eval_on_selector_all(
            "img",
            "imgs => Promise.all(imgs.map(i => i.decode().then("
            "() => [i.naturalWidth, i.getBoundingClientRect().right], () => [0, 0])))",
        )
        layout = frame.evaluate(
            "() => ({wide: document.documentElement.scrollWidth, window: window.innerWidth,"
            " clipped: [...document.querySelectorAll('h1, h2, dt, dd, p')]"
            "   .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)})"
        )
    finally:
        page.close()
    return {"errors": errors, "requests": requests, "images": images, **layout}


def assert_renders(opened: dict, own: str) -> None:
    """Every image decoded and inside the window, no console error, no request but the page
    (``own``) and its data URIs, nothing wider than the window (a wide table scrolls)."""
    assert opened["errors"] == []
    assert len(opened["images"]) >= 5  # importance, marginals, pairs, curves, dynamics, boundary
    for decoded_width, right in opened["images"]:
        assert decoded_width > 0
        assert right <= opened["window"] + 0.5
    assert [u for u in opened["requests"] if not (u.startswith(own) or u.startswith("data:"))] == []
    assert opened["wide"] <= opened["window"]
    assert opened["clipped"] == []


def test_the_page_opens_from_disk_in_chromium_narrow_and_wide(twice, chromium, tmp_path):
    _, uri, parents = twice
    client = MlflowClient(uri)
    html = artifact(client, parents[0].info.run_id, "report.html")
    assert len(html) <= MAX_PAGE_BYTES
    text = html.decode()
    for absent in ("<script", "<link", "http://", "https://", 'src="file'):
        assert absent not in text
    assert "train.learning_rate" in text and "Mattered most" in text
    page = tmp_path / "report.html"
    page.write_bytes(html)
    for width in (NARROW, 1500):
        assert_renders(open_page(chromium, page.as_uri(), width), page.as_uri())


def test_the_parent_runs_page_opens_as_the_mlflow_ui_serves_it(twice, chromium, tmp_path):
    folder, uri, parents = twice
    with ui_process(uri, folder) as (ui, port):
        ui.stdout.readline()  # printed once the UI answers
        parent = parents[0].info
        view = f"http://127.0.0.1:{port}/#/experiments/{parent.experiment_id}/runs/{parent.run_id}"
        opened = open_page(chromium, f"{view}/artifacts/report.html", 1500, in_ui=True)
        assert opened["window"] < 700  # the narrow column the page lays out for
        assert_renders(opened, "blob:")


def test_make_report_writes_and_logs_the_page(twice, capfd):
    folder, uri, parents = twice
    out = str(folder / "reports")
    done = call_main(capfd, report_command.main, "--tracking-uri", uri, "--out", out)
    assert done.returncode == 0, done.stderr
    written = folder / "reports" / parents[-1].info.run_name
    for name in ("report.html", importance.FILE, "importance.png", "marginals.png", "pairs.png"):
        assert (written / name).stat().st_size > 0
    logged = json.loads(
        artifact(MlflowClient(uri), parents[-1].info.run_id, f"report/{importance.FILE}")
    )
    assert logged == json.loads((written / importance.FILE).read_text())
    assert "Mattered most: train.learning_rate" in done.stdout


def test_a_search_ends_with_its_importance_and_page_on_its_parent(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    done = run_cli(
        "pipeline.search",
        "search.n_trials=5",
        f"tracking.uri={uri}",
        "train=quick",
        "train.log_every=10",
        "search.workers=1",
        "search.pruner=none",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(uri)
    (parent,), _ = parents_and_children(client)
    found = json.loads(artifact(client, parent.info.run_id, importance.FILE))
    assert found["evaluator"] == "fANOVA" and found["runs"] == 5
    assert set(found["importances"]) == {"model.depth", "model.width", "train.learning_rate"}
    # the search's space says which dimensions are on a log scale
    assert found["log_scale"] == ["model.width", "train.learning_rate"]
    assert found["line"] in client.get_run(parent.info.run_id).data.tags[tracking.NOTE]
    assert artifact(client, parent.info.run_id, "report.html").startswith(b"<!DOCTYPE html>")


def finished_run(number: int, params: dict, val_accuracy: float) -> Run:
    """A FINISHED run as MLflow returns it, with these params and validation accuracy."""
    info = RunInfo(
        run_id=f"run{number}",
        experiment_id="1",
        user_id="",
        status="FINISHED",
        start_time=number,
        end_time=number + 1,
        lifecycle_stage="active",
    )
    params = [Param(key, str(value)) for key, value in params.items()]
    return Run(info, RunData(metrics=[Metric("val_accuracy", val_accuracy, 0, 0)], params=params))


def test_words_and_none_are_categories_and_their_figures_show_all_their_text():
    grid = itertools.product([1, 2, 3], ["relu", "sigmoid", "tanh"], [None, 32])
    runs = [
        finished_run(
            i,
            {
                "seed": 0,
                "model.depth": depth,
                "model.activation": activation,
                "train.batch_size": batch,
            },
            0.5 + 0.3 * (activation == "relu"),
        )
        for i, (depth, activation, batch) in enumerate(grid)
    ]
    found = importance.compute(runs)
    assert next(iter(found.importances)) == "model.activation"
    assert found.importances["model.activation"] >= 0.8 and found.log_scale == []
    frame, knobs = importance.accuracy_frame(runs)
    kinds = {k.key: type(k.distribution).__name__ for k in knobs}
    assert kinds == {
        "model.activation": "CategoricalDistribution",
        "model.depth": "IntDistribution",
        "train.batch_size": "CategoricalDistribution",
    }
    numeric = [k.key for k in knobs if k.numeric]
    figures = [
        sweep_plots.marginals(importance.marginals(frame, knobs), numeric, []),
        sweep_plots.pair_heatmaps(importance.pairs(frame, knobs)),
    ]
    for figure in figures:
        assert outside_the_canvas(figure) == [0, 0, 0, 0]
