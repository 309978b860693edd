"""A comparison report of run directories: one self-contained HTML page and its markdown twin.

``write_report(run_dirs, out)`` writes

- ``out`` (``.html``): inline CSS, the curves embedded as base64 ``data:``
  PNGs, and no script or remote resource, so it opens from disk in any
  browser without a server;
- ``out`` with suffix ``.md``, and the PNG files it links, next to it.

Both contain the config keys whose values differ between the runs, one row of
final metrics per run, the overlaid per-epoch curves (test accuracy, each
modality's test prototype accuracy and the imbalance ratio) and every run's
full config.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from modalbalance.analysis.plots import create_figure, epoch_series, has_key, modality_names, read_metrics, save_figure
from modalbalance.errors import ConfigError, DataError

logger = logging.getLogger("modalbalance")

RUN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
# Line styles and markers also change from run to run, so that runs with equal curves stay visible.
RUN_LINE_STYLES = ("-", "--", "-.", ":")
RUN_MARKERS = ("o", "s", "^", "D", "v")
MISSING = "—"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .85rem; }
pre { background: #f7f7f7; padding: .6rem; overflow-x: auto; }
figure { margin: 1rem 0; } figcaption { color: #555; font-size: .9rem; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; }
.scroll { overflow-x: auto; }
"""


@dataclass
class Run:
    """One run directory as the report reads it."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def final(self) -> dict[str, Any]:
        return self.records[-1]

    @property
    def modality_names(self) -> list[str]:
        return modality_names(self.records)


# -- reading -----------------------------------------------------------------


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory's config, metrics and (when present) summary, raising DataError when it is not one."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"run directory not found: {path}")
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{path} is not a run directory (no config.yaml); pass a directory written by `modalbalance train`")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise DataError(f"invalid YAML in {config_path}; the file is damaged, so restore it or rerun training") from None
    if not isinstance(config, dict):
        raise DataError(f"{config_path} must contain a mapping of config sections; the file is damaged, so restore it or rerun training")
    records = read_metrics(path)
    summary: dict[str, Any] = {}
    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("ignoring %s: invalid JSON", summary_path)
    return Run(path=path, config=config, records=records, summary=summary)


def assign_labels(runs: Sequence[Run]) -> None:
    """Label each run by its directory name, adding parent folders until the labels are unique."""
    for depth in range(1, 1 + max(len(run.path.resolve().parts) for run in runs)):
        labels = ["/".join(run.path.resolve().parts[-depth:]) for run in runs]
        if len(set(labels)) == len(labels):
            break
    for run, label in zip(runs, labels):
        run.label = label


# -- tables ------------------------------------------------------------------


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys. An empty mapping stays one value."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(configs: Sequence[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Return (dotted key, value per run) for every key whose value is not the same in all runs.

    A key missing from a run counts as different and shows as ``MISSING``.
    """
    flat = [flatten(config) for config in configs]
    keys: list[str] = []
    for entry in flat:
        keys.extend(key for key in entry if key not in keys)
    differences = []
    sentinel = object()
    for key in keys:
        values = [entry.get(key, sentinel) for entry in flat]
        if any(value is sentinel or value != values[0] for value in values):
            differences.append((key, [MISSING if value is sentinel else value for value in values]))
    return differences


def format_value(value: Any) -> str:
    """Format a config value as YAML writes scalars (``null``, ``true``), and lists or mappings in flow style."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value)
    return str(value)


def method_name(run: Run) -> str:
    if run.summary.get("method"):
        return str(run.summary["method"])
    method = run.config.get("method", {})
    if method.get("unimodal"):
        return f"unimodal-{method['unimodal']}"
    return str(method.get("name", MISSING))


def final_metrics(runs: Sequence[Run]) -> tuple[list[str], list[list[Any]]]:
    """Return the column titles and one row per run: identity, final and best test accuracy, per-modality accuracies, imbalance."""
    names: list[str] = []
    for run in runs:
        names.extend(name for name in run.modality_names if name not in names)
    head_names = [name for name in names if any(has_key(run.records, f"test/head_accuracy/{name}") for run in runs)]
    angle_names = [name for name in names if any(has_key(run.records, f"gradient_angle/{name}") for run in runs)]
    show_ratio = any(has_key(run.records, "imbalance_ratio") for run in runs)

    columns = ["run", "dataset", "method", "fusion", "epochs", "test accuracy", "best test accuracy", "train accuracy"]
    columns += [f"{name} prototype (test)" for name in names]
    columns += [f"{name} head (test)" for name in head_names]
    columns += [f"{name} gradient angle (deg)" for name in angle_names]
    if show_ratio:
        columns.append("imbalance ratio")
    columns.append("wall time (s)")

    rows = []
    for run in runs:
        final = run.final
        test_accuracies = [float(record["test/accuracy"]) for record in run.records if "test/accuracy" in record]
        row: list[Any] = [
            run.label,
            run.config.get("data", {}).get("name", MISSING),
            method_name(run),
            run.config.get("model", {}).get("fusion", MISSING),
            int(final.get("epoch", len(run.records) - 1)) + 1,
            final.get("test/accuracy"),
            max(test_accuracies) if test_accuracies else None,
            final.get("train/accuracy"),
        ]
        row += [final.get(f"test/prototype_accuracy/{name}") for name in names]
        row += [final.get(f"test/head_accuracy/{name}") for name in head_names]
        row += [final.get(f"gradient_angle/{name}") for name in angle_names]
        if show_ratio:
            row.append(final.get("imbalance_ratio"))
        row.append(f"{sum(float(record.get('seconds', 0.0)) for record in run.records):.1f}")
        rows.append(row)
    return columns, rows


def format_cell(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# -- curves ------------------------------------------------------------------


def _run_style(index: int) -> dict[str, str]:
    return {
        "color": RUN_COLORS[index % len(RUN_COLORS)],
        "linestyle": RUN_LINE_STYLES[index % len(RUN_LINE_STYLES)],
        "marker": RUN_MARKERS[index % len(RUN_MARKERS)],
    }


def _finish(axis, title: str, ylabel: str, legend: bool = True) -> None:
    axis.set_title(title)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
    axis.xaxis.get_major_locator().set_params(integer=True)
    if legend and axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small")


def plot_test_accuracy(runs: Sequence[Run], path: Path) -> Path:
    figure, (axis,) = create_figure()
    for index, run in enumerate(runs):
        axis.plot(*epoch_series(run.records, "test/accuracy"), **_run_style(index), label=run.label)
    axis.set_ylim(-0.02, 1.02)
    _finish(axis, "fused test accuracy", "accuracy")
    return save_figure(figure, path)


def plot_prototype_accuracy(runs: Sequence[Run], names: Sequence[str], path: Path) -> Path:
    figure, axes = create_figure(1, len(names))
    for position, (axis, name) in enumerate(zip(axes, names)):
        for index, run in enumerate(runs):
            key = f"test/prototype_accuracy/{name}"
            if has_key(run.records, key):
                axis.plot(*epoch_series(run.records, key), **_run_style(index), label=run.label)
        axis.set_ylim(-0.02, 1.02)
        _finish(axis, f"{name}: test prototype accuracy", "accuracy", legend=position == 0)
    return save_figure(figure, path)


def plot_imbalance_ratio(runs: Sequence[Run], path: Path) -> Path:
    figure, (axis,) = create_figure()
    for index, run in enumerate(runs):
        if has_key(run.records, "imbalance_ratio"):
            axis.plot(*epoch_series(run.records, "imbalance_ratio"), **_run_style(index), label=run.label)
    axis.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    _finish(axis, "imbalance ratio (epoch mean of the training steps)", "ratio")
    return save_figure(figure, path)


def plot_curves(runs: Sequence[Run], folder: Path, stem: str) -> list[tuple[str, Path]]:
    """Write the overlaid curves as ``<stem>-*.png`` in ``folder`` and return (caption, path) pairs."""
    names: list[str] = []
    for run in runs:
        names.extend(name for name in run.modality_names if name not in names)
    curves = [
        ("Fused test accuracy per epoch.", plot_test_accuracy(runs, folder / f"{stem}-test-accuracy.png")),
        (
            "Test accuracy of each modality's nearest-prototype classifier per epoch.",
            plot_prototype_accuracy(runs, names, folder / f"{stem}-prototype-accuracy.png"),
        ),
    ]
    if any(has_key(run.records, "imbalance_ratio") for run in runs):
        curves.append(
            (
                "Imbalance ratio (modality 0 score over modality 1 score, below 1 when modality 0 lags), mean over each epoch's steps.",
                plot_imbalance_ratio(runs, folder / f"{stem}-imbalance-ratio.png"),
            )
        )
    else:
        logger.info("no run logs an imbalance ratio; the report has no imbalance curve")
    return curves


# -- rendering ---------------------------------------------------------------


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], row_class: str | None = None, first_is_header: bool = False) -> str:
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = []
    for row in rows:
        cells = []
        for position, value in enumerate(row):
            text = html.escape(format_cell(value))
            if position == 0 and first_is_header:
                cells.append(f"<th>{text}</th>")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="number">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        attribute = f' class="{row_class}"' if row_class else ""
        body.append(f"<tr{attribute}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return format_cell(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(column) for column in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _difference_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[Any]], str | None]:
    """Return the config-difference table (one row per key, one column per run), or a note when there is none."""
    columns = ["key", *(run.label for run in runs)]
    if len(runs) == 1:
        return columns, [], "One run, so there is nothing to compare. Its full config is at the end."
    differences = config_differences([run.config for run in runs])
    if not differences:
        return columns, [], "The runs have identical configs."
    rows = [[key, *(format_value(value) for value in values)] for key, values in differences]
    return columns, rows, None


def render_html(runs: Sequence[Run], curves: Sequence[tuple[str, Path]]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>modalbalance report: {html.escape(', '.join(run.label for run in runs))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>modalbalance training report</h1>",
        "<h2>Runs</h2>",
        _html_table(["run", "directory"], [[run.label, str(run.path.resolve())] for run in runs]),
        "<h2>Config differences</h2>",
    ]
    columns, rows, note = _difference_rows(runs)
    parts.append(f'<p class="note">{html.escape(note)}</p>' if note else _html_table(columns, rows, first_is_header=True))

    parts.append("<h2>Final metrics</h2>")
    parts.append('<p class="note">Values of the last epoch. Test prototype accuracy is the accuracy of the nearest-prototype classifier on that modality\'s embedding alone.</p>')
    columns, rows = final_metrics(runs)
    parts.append(_html_table(columns, rows, row_class="run-row"))

    parts.append("<h2>Curves</h2>")
    for caption, path in curves:
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    parts.append("<h2>Full configs</h2>")
    for run in runs:
        config_text = yaml.safe_dump(run.config, sort_keys=False)
        parts.append(f"<details><summary>{html.escape(run.label)}</summary><pre>{html.escape(config_text)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(runs: Sequence[Run], curves: Sequence[tuple[str, Path]]) -> str:
    parts = ["# modalbalance training report", "", "## Runs", "", _markdown_table(["run", "directory"], [[run.label, str(run.path.resolve())] for run in runs]), ""]
    parts += ["## Config differences", ""]
    columns, rows, note = _difference_rows(runs)
    parts += [note if note else _markdown_table(columns, rows), ""]
    parts += ["## Final metrics", "", "Values of the last epoch.", ""]
    columns, rows = final_metrics(runs)
    parts += [_markdown_table(columns, rows), ""]
    parts += ["## Curves", ""]
    for caption, path in curves:
        parts += [f"![{caption}]({path.name})", "", caption, ""]
    parts += ["## Full configs", ""]
    for run in runs:
        parts += [f"### {run.label}", "", "```yaml", yaml.safe_dump(run.config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(parts)


def write_report(run_dirs: Sequence[str | Path], out: str | Path = "report.html") -> list[Path]:
    """Write the HTML report to ``out``, its markdown twin and PNGs beside it, and return the paths written (HTML first).

    Raises DataError naming the first argument that is not a run directory,
    and ConfigError when ``out`` does not end in ``.html`` or a run is given twice.
    """
    if not run_dirs:
        raise ConfigError("the report needs at least one run directory")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"the report file must end in .html; got {out}")
    seen: dict[Path, str] = {}
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            raise ConfigError(f"run directory {run_dir} is given twice (also as {seen[resolved]})")
        seen[resolved] = str(run_dir)

    runs = [load_run(run_dir) for run_dir in run_dirs]
    assign_labels(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(runs, out.parent, out.stem)

    out.write_text(render_html(runs, curves), encoding="utf-8")
    markdown_path = out.with_suffix(".md")
    markdown_path.write_text(render_markdown(runs, curves), encoding="utf-8")
    logger.info("wrote %s, %s and %d PNG files", out, markdown_path, len(curves))
    return [out, markdown_path, *(path for _, path in curves)]
