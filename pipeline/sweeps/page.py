"""A sweep's findings and its page: what was swept, what won, which knob mattered.

At the end of every grid sweep and search (``record_findings``, from
``parent_run.finish``) and in ``make report`` (``findings``), the parent run gets:

- ``importance.json`` and one metric ``importance/<key>`` per swept hyperparameter
  (``pipeline.sweeps.importance``), and a line of its description naming the knob that
  mattered most;
- ``importance.png``, ``marginals.png``, ``pairs.png`` and ``curves.png``;
- ``report.html``: one self-contained page (every image a data URI, no script, stylesheet
  or link outside it) that the MLflow UI's artifact view shows inline. It is laid out for
  that view's narrow column (about 570 px beside MLflow's panels): images scale to the
  column, wide tables scroll.
"""

import base64
import html
import re
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.store import plots, sweep_plots, tables, tracking
from pipeline.sweeps import importance

PAGE = "report.html"
BOUNDARY = "decision_boundary.png"  # a job's artifact (pipeline.job.run)
RANKED = [
    "run",
    "status",
    "depth",
    "width",
    "learning_rate",
    "activation",
    "optimizer",
    "batch_size",
    "l2",
    "val_accuracy",
    "test_accuracy",
    "val_cost",
    "train_cost",
    "seconds",
]
ALWAYS = {"run", "status", "val_accuracy", "test_accuracy", "val_cost", "train_cost", "seconds"}
MAX_VALUES_SHOWN = 6  # a knob with more values (a search's): its range instead


@dataclass
class Findings:
    """The importance, the figures (file name -> PNG bytes) and the page of a sweep."""

    importance: importance.Importance
    images: dict[str, bytes] = field(default_factory=dict)
    page: str = ""

    def files(self) -> dict:
        """file name -> a writer of it at a path, as ``tracking.log_files`` takes them."""
        contents = {importance.FILE: self.importance.to_json().encode(), **self.images}
        contents[PAGE] = self.page.encode()
        return {name: partial(Path.write_bytes, data=data) for name, data in contents.items()}

    def write(self, folder: Path) -> None:
        for name, write in self.files().items():
            write(folder / name)


def record_findings(client: MlflowClient, parent_run_id: str, table: pd.DataFrame) -> None:
    """A finished sweep's or search's findings on its parent run: its files, its
    ``importance/<key>`` metrics, and the importance's line added to its description."""
    parent = client.get_run(parent_run_id)
    runs = tables.latest_attempts(tracking.child_runs(client, parent_run_id))
    found = findings(client, runs, table, parent.info.run_name, search_space(parent))
    tracking.log_files(client, parent_run_id, found.files())
    note = "\n\n".join(filter(None, [parent.data.tags.get(tracking.NOTE), found.importance.line]))
    tracking.log_results(
        client, parent_run_id, final=found.importance.metrics(), tags={tracking.NOTE: note}
    )


def search_space(parent) -> dict[str, str]:
    """A sweep's recorded dimensions (params ``sweep.<key>``): a search's say which are on a
    log scale."""
    params = parent.data.params
    return {k.removeprefix("sweep."): v for k, v in params.items() if k.startswith("sweep.")}


def findings(
    client: MlflowClient,
    runs: list,
    table: pd.DataFrame,
    name: str,
    space: dict[str, str] | None = None,
) -> Findings:
    """The importance, figures and page of the sweep ``name`` whose runs are ``runs``
    (latest attempts) and ``table`` (their ``tables.runs_table``)."""
    found = Findings(importance.compute(runs, space))
    frame, knobs = importance.accuracy_frame(runs, space)
    imp = found.importance
    figures = {}
    if imp.importances:
        title = f"{imp.evaluator} importance for the validation accuracy"
        figures["importance.png"] = sweep_plots.importance_bars(imp.importances, title)
    if knobs:
        numeric = [k.key for k in knobs if k.numeric]
        margins = importance.marginals(frame, knobs)
        figures["marginals.png"] = sweep_plots.marginals(margins, numeric, imp.log_scale)
    pairs = importance.pairs(frame, knobs)
    if pairs:
        figures["pairs.png"] = sweep_plots.pair_heatmaps(pairs)
    if len(table):
        by_name = dict(zip(table.run_id, table.run, strict=True))
        curves = {
            key: {
                by_name[i]: c
                for i, c in tables.metric_curves(client, table.run_id, key).items()
                if c[0]
            }
            for key in sweep_plots.CURVES
        }
        figures["curves.png"] = sweep_plots.every_run_curves(curves, best_run(table))
    ratios = tables.gradient_ratios(client, table)
    if len(ratios):
        figures["dynamics_by_depth.png"] = plots.gradient_ratio_by_depth(ratios)
    found.images = {file: sweep_plots.png(figure) for file, figure in figures.items()}
    boundary = best_boundary(client, table)
    found.page = page(name, table, knobs, imp, found.images | boundary)
    return found


def best_run(table: pd.DataFrame) -> str | None:
    """The name of the best finished run by validation accuracy (the table is best first)."""
    finished = table[(table.status == "FINISHED") & table.val_accuracy.notna()]
    return finished.run.iloc[0] if len(finished) else None


def best_boundary(client: MlflowClient, table: pd.DataFrame) -> dict[str, bytes]:
    """{BOUNDARY: the best run's decision boundary}, or {} (no such run, or a data set of
    more than 2 features)."""
    name = best_run(table)
    if name is None:
        return {}
    run_id = table.run_id[table.run == name].iloc[0]
    with tempfile.TemporaryDirectory() as folder:
        try:
            return {
                BOUNDARY: Path(client.download_artifacts(run_id, BOUNDARY, folder)).read_bytes()
            }
        except (MlflowException, OSError):
            return {}


# -- the page --------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 8px 12px;
       max-width: 1100px; color: #222; overflow-wrap: anywhere; }
h1 { font-size: 1.35em; margin: 0.3em 0; } h2 { font-size: 1.1em; margin: 1.2em 0 0.4em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0; }
dt { font-weight: 600; } dd { margin: 0; }
img { display: block; max-width: 100%; height: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 13px; white-space: nowrap; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; }
"""

SECTIONS = [
    ("importance.png", "Which knob mattered"),
    ("marginals.png", "Validation accuracy against each knob (mean, and range over the others)"),
    ("pairs.png", "Each pair of knobs (mean validation accuracy)"),
    ("curves.png", "Train and validation curves of every run"),
    ("dynamics_by_depth.png", "Learning dynamics: the first layer's gradient over the last's"),
    (BOUNDARY, "The best run's decision boundary"),
]


def page(
    name: str, table: pd.DataFrame, knobs: list, imp: importance.Importance, images: dict
) -> str:
    """The page's HTML: a summary, the ranked table, then each figure there is."""
    best = best_run(table)
    won = "no run finished" if best is None else best
    if best is not None:
        won += f" ({tables.best_run_measures(table[table.run == best].iloc[0])})"
    summary = {
        "Swept": swept_line(knobs) or "nothing varies over the finished runs",
        "Runs": tables.counts_line(table),
        "Best run": won,
        "Importance": imp.line,
    }
    parts = [f"<h1>{html.escape(name)}</h1>", "<dl>"]
    parts += [f"<dt>{key}</dt><dd>{marked(value)}</dd>" for key, value in summary.items()]
    parts.append("</dl>")
    for file, heading in SECTIONS[:1]:
        parts += figure_section(file, heading, images)
    parts += [
        "<h2>Runs, ranked by validation accuracy (test beside, never used to choose)</h2>",
        f'<div class="scroll">{ranked_table(table)}</div>',
    ]
    for file, heading in SECTIONS[1:]:
        parts += figure_section(file, heading, images)
    if "dynamics_by_depth.png" not in images:
        parts.append(
            '<p class="note">No learning dynamics: the jobs ran with tracking.dynamics off.</p>'
        )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(name)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def figure_section(file: str, heading: str, images: dict[str, bytes]) -> list[str]:
    if file not in images:
        return []
    data = base64.b64encode(images[file]).decode()
    alt = html.escape(heading, quote=True)
    return [
        f"<h2>{html.escape(heading)}</h2>",
        f'<img alt="{alt}" src="data:image/png;base64,{data}">',
    ]


def marked(text: str) -> str:
    """``text`` as HTML, its markdown **bold** in bold."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def swept_line(knobs: list) -> str:
    """e.g. ``model.depth (1, 2, 3) x train.learning_rate (0.01 to 1, 30 values, log)``."""
    described = []
    for knob in knobs:
        values = sorted(knob.values.unique())
        if len(values) <= MAX_VALUES_SHOWN or not knob.numeric:
            shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
        else:
            shown = f"{values[0]:g} to {values[-1]:g}, {len(values)} values"
        described.append(f"{knob.key} ({shown}{', log scale' if knob.log else ''})")
    return " x ".join(described)


def ranked_table(table: pd.DataFrame) -> str:
    """The runs best first by validation accuracy, the columns that tell them apart."""
    columns = [c for c in RANKED if c in ALWAYS or table[c].nunique(dropna=False) > 1]
    return table[columns].to_html(
        index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep=""
    )
