"""Training curves of one run directory, written as PNG files to ``<run_dir>/plots/``.

The curves come from ``metrics.jsonl`` (one record per epoch) and, for the
imbalance plot, ``steps.jsonl`` (one record per training step). Every figure
is ``FIGURE_SIZE`` inches at ``DPI``, so every PNG is ``PIXEL_SIZE`` pixels.
Epochs are plotted 1-based, as the training log prints them.

matplotlib is imported inside the functions, and figures are drawn on an Agg
canvas without pyplot, so plotting neither slows down ``import modalbalance``
nor changes the process-wide matplotlib backend.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from modalbalance.errors import DataError

logger = logging.getLogger("modalbalance")

FIGURE_SIZE = (8.0, 5.0)  # inches
DPI = 100
PIXEL_SIZE = (800, 500)  # width, height of every PNG written here

FUSED_COLOR = "black"
# Colors of modalities 0, 1, ... (the fused curve is black).
MODALITY_COLORS = ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


# -- reading a run directory -------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read one JSON object per non-empty line, raising DataError that names the file and line of a bad one."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"invalid JSON on line {number} of {path}; the file is damaged, so remove that line or rerun training") from None
            if not isinstance(record, dict):
                raise DataError(f"line {number} of {path} is not a JSON object; the file is damaged, so remove that line or rerun training")
            records.append(record)
    return records


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Return the per-epoch records of a run directory, raising DataError when it is not one or has no epoch yet."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory not found: {run_dir}")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{run_dir} is not a run directory (no metrics.jsonl); pass a directory written by `modalbalance train`")
    records = read_jsonl(path)
    if not records:
        raise DataError(f"{path} contains no epoch yet; wait for the first epoch of the run to finish")
    return records


def read_steps(run_dir: str | Path) -> list[dict[str, Any]]:
    """Return the per-step records of a run directory, or an empty list when the method logs none."""
    path = Path(run_dir) / "steps.jsonl"
    return read_jsonl(path) if path.is_file() else []


def modality_names(records: Sequence[dict[str, Any]]) -> list[str]:
    """Return the modality names of a run, in logging order, from its ``test/prototype_accuracy/<modality>`` keys."""
    prefix = "test/prototype_accuracy/"
    names: list[str] = []
    for record in records:
        for key in record:
            if key.startswith(prefix) and key[len(prefix) :] not in names:
                names.append(key[len(prefix) :])
    return names


def epoch_series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Return (1-based epochs, values) of the records that contain ``key``."""
    epochs, values = [], []
    for index, record in enumerate(records):
        if key in record and record[key] is not None:
            epochs.append(int(record.get("epoch", index)) + 1)
            values.append(float(record[key]))
    return epochs, values


def has_key(records: Sequence[dict[str, Any]], key: str) -> bool:
    return any(key in record for record in records)


def modality_color(index: int) -> str:
    return MODALITY_COLORS[index % len(MODALITY_COLORS)]


# -- drawing -----------------------------------------------------------------


def create_figure(rows: int = 1, columns: int = 1, sharex: bool = False):
    """Return ``(figure, axes)`` of ``FIGURE_SIZE`` at ``DPI`` on an Agg canvas, with ``axes`` as a flat list."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, sharex=sharex, squeeze=False)
    return figure, [axis for row in axes for axis in row]


def save_figure(figure, path: Path) -> Path:
    """Write ``figure`` as a PNG of exactly ``PIXEL_SIZE`` pixels (no tight bounding box, which would change it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    logger.debug("wrote %s", path)
    return path


def _finish_epoch_axis(axis, title: str, ylabel: str) -> None:
    axis.set_title(title)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.grid(True, alpha=0.3)
    # Integer epochs only, also for runs of one or two epochs.
    axis.xaxis.get_major_locator().set_params(integer=True)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small")


def plot_accuracy(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Plot fused accuracy, each modality's prototype accuracy and, where logged, head accuracy, with train and test side by side."""
    names = modality_names(records)
    figure, axes = create_figure(1, 2)
    for axis, split in zip(axes, ("train", "test")):
        axis.plot(*epoch_series(records, f"{split}/accuracy"), color=FUSED_COLOR, marker="o", label="fused")
        for index, name in enumerate(names):
            color = modality_color(index)
            axis.plot(*epoch_series(records, f"{split}/prototype_accuracy/{name}"), color=color, marker="o", label=f"{name} prototype")
            head_key = f"{split}/head_accuracy/{name}"
            if has_key(records, head_key):
                axis.plot(*epoch_series(records, head_key), color=color, linestyle=":", marker=".", label=f"{name} head")
        axis.set_ylim(-0.02, 1.02)
        title = "train (evaluation subset)" if split == "train" else "test"
        _finish_epoch_axis(axis, title, "accuracy")
    return save_figure(figure, path)


def plot_losses(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Plot the training loss, the test cross-entropy and, for PMR, each modality's prototypical cross-entropy."""
    names = modality_names(records)
    figure, (axis,) = create_figure()
    axis.plot(*epoch_series(records, "train/loss"), color=FUSED_COLOR, marker="o", label="train loss (fused CE + method terms)")
    if has_key(records, "test/loss"):
        axis.plot(*epoch_series(records, "test/loss"), color=FUSED_COLOR, linestyle="--", marker="o", label="test fused CE")
    for index, name in enumerate(names):
        if has_key(records, f"pce/{name}"):
            axis.plot(*epoch_series(records, f"pce/{name}"), color=modality_color(index), marker=".", label=f"{name} prototypical CE (train mean)")
    _finish_epoch_axis(axis, "losses", "loss (nats)")
    return save_figure(figure, path)


def plot_true_class_scores(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Plot the mean softmax probability of the true class: fused next to each modality's head, train and test."""
    names = modality_names(records)
    figure, axes = create_figure(1, 2)
    for axis, split in zip(axes, ("train", "test")):
        axis.plot(*epoch_series(records, f"{split}/true_class_score"), color=FUSED_COLOR, marker="o", label="fused")
        for index, name in enumerate(names):
            axis.plot(*epoch_series(records, f"{split}/head_true_class_score/{name}"), color=modality_color(index), marker="o", label=f"{name} head")
        axis.set_ylim(-0.02, 1.02)
        title = "train (evaluation subset)" if split == "train" else "test"
        _finish_epoch_axis(axis, title, "true-class probability")
    return save_figure(figure, path)


def plot_gradient_angles(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Plot each encoder's angle between the fused-loss gradient and its unimodal-loss gradient."""
    names = [name for name in modality_names(records) if has_key(records, f"gradient_angle/{name}")]
    figure, (axis,) = create_figure()
    for index, name in enumerate(modality_names(records)):
        if name in names:
            axis.plot(*epoch_series(records, f"gradient_angle/{name}"), color=modality_color(index), marker="o", label=name)
    axis.axhline(90.0, color="gray", linewidth=0.8, linestyle="--")
    axis.set_ylim(0.0, 180.0)
    _finish_epoch_axis(axis, "encoder gradient: fused loss vs. unimodal loss", "angle (degrees)")
    return save_figure(figure, path)


def plot_imbalance(steps: Sequence[dict[str, Any]], names: Sequence[str], path: Path) -> Path:
    """Plot the imbalance ratio (top) and the acceleration and entropy weights (bottom) of every training step."""
    figure, (ratio_axis, weight_axis) = create_figure(2, 1, sharex=True)
    positions = list(range(len(steps)))
    epoch_starts = [index for index, record in enumerate(steps) if index == 0 or record.get("epoch") != steps[index - 1].get("epoch")]

    ratio_points = [(x, float(record["imbalance_ratio"])) for x, record in zip(positions, steps) if record.get("imbalance_ratio") is not None]
    if ratio_points:
        ratio_axis.plot(*zip(*ratio_points), color=FUSED_COLOR, linewidth=1.0, label="imbalance ratio")
    ratio_axis.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    ratio_axis.set_ylabel(f"ratio {names[0]} / {names[1]}" if len(names) == 2 else "ratio worst / best")
    ratio_axis.set_title("imbalance per training step")

    for index, name in enumerate(names):
        color = modality_color(index)
        for prefix, style, label in (("acceleration_weight", "-", "acceleration"), ("entropy_weight", "--", "entropy")):
            points = [(x, float(record[f"{prefix}/{name}"])) for x, record in zip(positions, steps) if record.get(f"{prefix}/{name}") is not None]
            if points:
                weight_axis.plot(*zip(*points), color=color, linestyle=style, linewidth=1.0, label=f"{name} {label} weight")
    weight_axis.set_ylabel("coefficient")
    weight_axis.set_xlabel("training step (all epochs; gray lines mark epoch starts)")

    for axis in (ratio_axis, weight_axis):
        for start in epoch_starts[1:]:
            axis.axvline(start, color="gray", linewidth=0.5, alpha=0.5)
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    return save_figure(figure, path)


def _steps_have_imbalance(steps: Sequence[dict[str, Any]]) -> bool:
    return any(key == "imbalance_ratio" or key.startswith(("acceleration_weight/", "entropy_weight/")) for record in steps for key in record)


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the curves of a run directory to ``<run_dir>/plots/`` and return the paths written.

    ``accuracy.png`` and ``losses.png`` are always written. ``imbalance.png``
    needs a ``steps.jsonl`` with the imbalance ratio or coefficients,
    ``true_class_scores.png`` needs per-modality head scores (concat and sum
    fusions), and ``gradient_angles.png`` needs ``gradient_angle/<modality>``
    keys. A plot whose input is missing is skipped with an info log line.
    Raises DataError when ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    steps = read_steps(run_dir)
    names = modality_names(records)
    plots = run_dir / "plots"
    written = [plot_accuracy(records, plots / "accuracy.png")]

    if not steps:
        logger.info("skipping imbalance.png: %s has no steps.jsonl (the method logs no per-step values)", run_dir)
    elif not _steps_have_imbalance(steps):
        logger.info("skipping imbalance.png: steps.jsonl in %s has no imbalance ratio or coefficients", run_dir)
    else:
        written.append(plot_imbalance(steps, names, plots / "imbalance.png"))

    written.append(plot_losses(records, plots / "losses.png"))

    if names and all(has_key(records, f"test/head_true_class_score/{name}") for name in names):
        written.append(plot_true_class_scores(records, plots / "true_class_scores.png"))
    else:
        logger.info("skipping true_class_scores.png: the fusion of %s does not split into per-modality logits", run_dir)

    if any(has_key(records, f"gradient_angle/{name}") for name in names):
        written.append(plot_gradient_angles(records, plots / "gradient_angles.png"))
    else:
        logger.debug("skipping gradient_angles.png: no gradient_angle/<modality> keys in %s", run_dir)

    logger.info("wrote %d plots to %s", len(written), plots)
    return written
