"""Evaluate a training checkpoint on a data split: fused accuracy, macro-F1, confusion matrix and per-modality accuracies.

The data set and model are rebuilt from the config stored in the checkpoint,
and the modality prototypes are the ones the trainer used for that epoch's
evaluation (``evaluation_prototypes``), so evaluating the test split of
``last.pt`` reproduces the ``test/accuracy`` and
``test/prototype_accuracy/<modality>`` that ``metrics.jsonl`` logged for its
epoch.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from modalbalance.errors import ConfigError, DataError

logger = logging.getLogger("modalbalance")

SPLITS = ("test", "train", "val")
CHECKPOINT_KEYS = ("epoch", "config", "model", "evaluation_prototypes", "modality_names", "class_names")
# The confusion matrix is printed only up to this many classes, but the JSON output always contains it.
MAX_PRINTED_CLASSES = 20


def _numpy_safe_globals() -> list:
    """Return the numpy types that the trainer's checkpoints contain (the numpy RNG state), for a weights-only load."""
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    return [multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _torch_load(path: Path, trust_checkpoint: bool) -> Any:
    if trust_checkpoint:
        return torch.load(path, map_location="cpu", weights_only=False)
    if not hasattr(torch.serialization, "safe_globals"):
        # NOTE: without torch.serialization.safe_globals (older PyTorch), a
        # weights-only load rejects the numpy RNG state in every checkpoint.
        logger.warning("PyTorch %s cannot load %s weights-only; unpickling it in full", torch.__version__, path)
        return torch.load(path, map_location="cpu", weights_only=False)
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_training_checkpoint(path: str | Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Load a ``last.pt`` written by the trainer, raising DataError that names the file when it is missing or damaged.

    By default the file is loaded weights-only (tensors, plain containers and
    the numpy RNG state), so a checkpoint from elsewhere cannot run code while
    it is read. ``trust_checkpoint`` unpickles it in full instead, for
    checkpoints that contain other Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    damaged = f"cannot read checkpoint {path}: the file is damaged or not a PyTorch checkpoint"
    if not zipfile.is_zipfile(path):
        # torch.save writes zip archives (its docstring: the default since PyTorch 1.6), and the trainer uses it.
        raise DataError(f"{damaged} (not a zip archive)")
    try:
        state = _torch_load(path, trust_checkpoint)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise DataError(
                f"checkpoint {path} contains Python objects that a weights-only load rejects; "
                "if you trust the file, pass --trust-checkpoint to unpickle it in full"
            ) from None
        raise DataError(damaged) from None
    except Exception as error:  # noqa: BLE001  (a damaged archive makes torch.load raise RuntimeError, KeyError, EOFError and more)
        detail = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {detail[0]}" if detail else type(error).__name__
        raise DataError(f"{damaged} ({reason})") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise DataError(f"{path} is not a modalbalance training checkpoint (missing {', '.join(missing)}); pass the last.pt of a run directory")
    return state


def _load_model_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys:
        raise DataError(
            f"checkpoint {path} has no weights for {len(result.missing_keys)} parameters of the model built from its config "
            f"(first: {result.missing_keys[0]}); the code that built the model has changed since the run"
        )
    if result.unexpected_keys:
        # NOTE: balancing methods may attach modules (auxiliary heads) to the
        # model during training. They are not part of the forward pass that
        # evaluation uses, so their weights are skipped here.
        logger.info("ignoring %d checkpoint weights that the rebuilt model does not have (first: %s)", len(result.unexpected_keys), result.unexpected_keys[0])


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "test",
    data_root: str | Path | None = None,
    device: str = "cpu",
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """Rebuild the data split and model of a checkpoint, evaluate them and return the results as a JSON-ready dict.

    Keys: ``checkpoint``, ``epoch`` (0-based), ``split``, ``dataset``,
    ``method``, ``fusion``, ``num_samples``, ``modality_names``,
    ``class_names``, ``accuracy`` and ``macro_f1`` (fused),
    ``loss`` (fused cross-entropy), ``true_class_score``,
    ``prototype_accuracy`` and, for fusions that split into per-modality
    logits, ``head_accuracy`` (both modality -> value),
    ``confusion_matrix`` (rows: true class, columns: predicted class) and,
    for the test split, ``logged``: the test numbers that training logged for
    this epoch. The train split is the whole training set, while the
    ``train/*`` numbers of ``metrics.jsonl`` come from a subset of it
    (``train.train_eval_fraction``).
    """
    from sklearn.metrics import confusion_matrix, f1_score

    from modalbalance.models.factory import build_model
    from modalbalance.pmr import PrototypeBank
    from modalbalance.training.data import BatchLoader
    from modalbalance.training.evaluation import evaluate
    from modalbalance.training.runner import build_dataset, method_label

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device is 'cuda' but no CUDA device is available; use device cpu")
    path = Path(checkpoint)
    state = load_training_checkpoint(path, trust_checkpoint)
    config = state["config"]

    data_config = dict(config["data"])
    if data_root is not None:
        data_config["root"] = str(data_root)
    dataset = build_dataset(data_config, split, config["seed"])
    names = tuple(dataset.modality_names)
    if names != tuple(state["modality_names"]) or tuple(dataset.class_names) != tuple(state["class_names"]):
        raise DataError(
            f"the {split} split built from {path}'s config has modalities {list(names)} and {dataset.num_classes} classes, "
            f"but the checkpoint was trained on {list(state['modality_names'])} and {len(state['class_names'])} classes; "
            "check --data-root"
        )

    model = build_model(config["model"], dataset)
    _load_model_weights(model, state["model"], path)
    model.to(device)
    bank = PrototypeBank(len(names), dataset.num_classes, class_names=dataset.class_names)
    bank.load_state_dict(state["evaluation_prototypes"])

    train_config = config["train"]
    loader = BatchLoader(dataset, None, train_config["eval_batch_size"], shuffle=False, num_workers=train_config["num_workers"])
    # Collect the fused predictions of the same forward passes that
    # `evaluate` makes, so the data are read once.
    predictions: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []

    def record_predictions(module, args, output) -> None:
        predictions.append(output.logits.argmax(dim=1).cpu())

    def batches():
        for inputs, labels in loader.batches():
            targets.append(labels.cpu())
            yield inputs, labels

    hook = model.register_forward_hook(record_predictions)
    try:
        metrics = evaluate(model, batches(), names, bank, torch.device(device))
    finally:
        hook.remove()
    true_labels = torch.cat(targets).numpy()
    predicted = torch.cat(predictions).numpy()

    result: dict[str, Any] = {
        "checkpoint": str(path),
        "epoch": int(state["epoch"]),
        "split": split,
        "dataset": config["data"]["name"],
        "method": method_label(config["method"]),
        "fusion": config["model"]["fusion"],
        "num_samples": int(true_labels.size),
        "modality_names": list(names),
        "class_names": list(dataset.class_names),
        "accuracy": metrics["accuracy"],
        "macro_f1": float(f1_score(true_labels, predicted, average="macro", zero_division=0)),
        "loss": metrics["loss"],
        "true_class_score": metrics["true_class_score"],
        "prototype_accuracy": {name: metrics[f"prototype_accuracy/{name}"] for name in names},
    }
    if f"head_accuracy/{names[0]}" in metrics:
        result["head_accuracy"] = {name: metrics[f"head_accuracy/{name}"] for name in names}
    result["confusion_matrix"] = confusion_matrix(true_labels, predicted, labels=list(range(dataset.num_classes))).tolist()
    logged = _logged_test_metrics(state, names)
    if split == "test" and logged:
        result["logged"] = logged
    return result


def _logged_test_metrics(state: Mapping[str, Any], names) -> dict[str, float]:
    """Return the test metrics that training logged for the checkpoint's epoch, keyed like ``metrics.jsonl``."""
    records = [record for record in state.get("history") or [] if record.get("epoch") == state["epoch"]]
    if not records:
        return {}
    keys = ["test/accuracy", *(f"test/prototype_accuracy/{name}" for name in names), *(f"test/head_accuracy/{name}" for name in names)]
    return {key: records[-1][key] for key in keys if key in records[-1]}


def format_evaluation(result: Mapping[str, Any]) -> str:
    """Render an ``evaluate_checkpoint`` result as a fixed-width table, with the logged value beside each test metric."""
    logged = result.get("logged", {})
    rows = [
        ("fused accuracy", result["accuracy"], logged.get("test/accuracy")),
        ("fused macro-F1", result["macro_f1"], None),
        ("fused cross-entropy", result["loss"], None),
        ("fused true-class probability", result["true_class_score"], None),
    ]
    for name, value in result["prototype_accuracy"].items():
        rows.append((f"{name} prototype accuracy", value, logged.get(f"test/prototype_accuracy/{name}")))
    for name, value in result.get("head_accuracy", {}).items():
        rows.append((f"{name} head accuracy", value, logged.get(f"test/head_accuracy/{name}")))

    width = max(len(label) for label, _, _ in rows)
    title = (
        f"{result['method']} / {result['fusion']} / {result['dataset']}, epoch {result['epoch'] + 1}, "
        f"{result['split']} split ({result['num_samples']} samples)"
    )
    header = f"{'metric'.ljust(width)}  {'value':>8}"
    if logged:
        header += f"  {'logged':>8}"
    lines = [title, "-" * max(len(title), len(header)), header]
    for label, value, logged_value in rows:
        line = f"{label.ljust(width)}  {value:8.4f}"
        if logged and logged_value is not None:
            line += f"  {logged_value:8.4f}"
        lines.append(line)

    lines.append("")
    lines.extend(_format_confusion_matrix(result["confusion_matrix"], result["class_names"]))
    lines.append(f"checkpoint: {result['checkpoint']}")
    return "\n".join(lines)


def _format_confusion_matrix(matrix: list[list[int]], class_names: list[str]) -> list[str]:
    if len(class_names) > MAX_PRINTED_CLASSES:
        return [f"confusion matrix: {len(class_names)} classes, too many to print; write it with --out FILE.json"]
    labels = [str(name) for name in class_names]
    cell = max(max(len(label) for label in labels), max(len(str(count)) for row in matrix for count in row))
    label_width = max(len(label) for label in labels)
    lines = ["confusion matrix (rows: true class, columns: predicted class)"]
    lines.append(" " * label_width + "  " + " ".join(label.rjust(cell) for label in labels))
    for label, row in zip(labels, matrix):
        lines.append(label.rjust(label_width) + "  " + " ".join(str(count).rjust(cell) for count in row))
    return lines
