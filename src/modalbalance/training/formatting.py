"""Human-readable lines and tables for epoch logs and run summaries."""

from __future__ import annotations

from typing import Any, Mapping



# The numbers in a run's summary.json. Validation keys exist only for runs with
# a validation split, and head accuracies only for fusions that split into
# per-modality logits. Per-modality keys map modality names to accuracies.
SUMMARY_NUMBER_KEYS = (
    "test_accuracy",
    "train_accuracy",
    "best_val_accuracy",
    "test_accuracy_at_best_val",
    "best_val_epoch",
    "epochs",
    "seed",
    "seconds",
)
SUMMARY_MODALITY_KEYS = ("modality_test_accuracy", "modality_train_accuracy", "modality_head_test_accuracy")


def check_summary_metric(metric: str) -> str | None:
    """Return why ``metric`` names no number of a run summary, or None when it does."""
    parts = metric.split(".")
    if len(parts) == 1 and parts[0] in SUMMARY_NUMBER_KEYS:
        return None
    if len(parts) == 2 and parts[0] in SUMMARY_MODALITY_KEYS and parts[1]:
        return None
    choices = ", ".join([*SUMMARY_NUMBER_KEYS, *(f"{key}.<modality>" for key in SUMMARY_MODALITY_KEYS)])
    return f"{metric!r} is not a number in a run summary; choose one of {choices}"


def method_label(method_config: Mapping) -> str:
    """Name a run's method for summaries: ``unimodal-<modality>`` for uni-modal runs."""
    if method_config.get("unimodal"):
        return f"unimodal-{method_config['unimodal']}"
    return method_config["name"]


def format_epoch(record: Mapping[str, Any], modality_names, epochs: int) -> str:
    parts = [
        f"epoch {record['epoch'] + 1}/{epochs}",
        f"loss {record['train/loss']:.4f}",
        f"acc train {record['train/accuracy']:.4f} test {record['test/accuracy']:.4f}",
    ]
    for name in modality_names:
        part = f"{name}: proto {record[f'train/prototype_accuracy/{name}']:.4f}/{record[f'test/prototype_accuracy/{name}']:.4f}"
        if f"test/head_accuracy/{name}" in record:
            part += f" head {record[f'test/head_accuracy/{name}']:.4f}"
        parts.append(part)
    if "imbalance_ratio" in record:
        parts.append(f"ratio {record['imbalance_ratio']:.3f}")
        weights = [f"{record[f'acceleration_weight/{name}']:.3f}" for name in modality_names if f"acceleration_weight/{name}" in record]
        if weights:
            parts.append("coef " + "/".join(weights))
    return " | ".join(parts)


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """Render a run summary as a small fixed-width table."""
    rows = [("fused test accuracy", f"{summary['test_accuracy']:.4f}"), ("fused train accuracy", f"{summary['train_accuracy']:.4f}")]
    for name, value in summary["modality_test_accuracy"].items():
        rows.append((f"{name} prototype test accuracy", f"{value:.4f}"))
    for name, value in summary.get("modality_head_test_accuracy", {}).items():
        rows.append((f"{name} head test accuracy", f"{value:.4f}"))
    if "best_val_epoch" in summary:
        # Epochs are 1-based here, as in the per-epoch log lines; the JSON files count from 0.
        best_epoch = summary["best_val_epoch"] + 1
        rows.append((f"fused test accuracy at best validation (epoch {best_epoch})", f"{summary['test_accuracy_at_best_val']:.4f}"))
    rows.append(("wall time (s)", f"{summary['seconds']:.1f}"))
    width = max(len(label) for label, _ in rows)
    title = f"{summary['method']} / {summary['fusion']} / {summary['dataset']} (seed {summary['seed']}, {summary['epochs']} epochs)"
    lines = [title, "-" * max(len(title), width + 12)]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines.append(f"run directory: {summary['run_dir']}")
    return "\n".join(lines)
