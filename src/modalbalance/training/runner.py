"""The training run: one readable loop around the balancing-method hooks.

``train(config, out_dir)`` builds everything from a config (see
``training/config.py``), trains, evaluates every epoch and writes the run
directory:

- ``config.yaml``: the resolved config;
- ``metrics.jsonl``: one JSON object per epoch (0-based ``epoch``);
- ``steps.jsonl``: the imbalance ratio and coefficients of every step, for methods that log them;
- ``summary.json``: final test accuracy, per-modality prototype accuracy and more;
- ``last.pt``: the checkpoint after the latest epoch, written atomically.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from modalbalance.data.base import MultimodalDataset
from modalbalance.errors import ConfigError, TrainingError
from modalbalance.methods import METHODS, BalancingMethod, TrainingContext
from modalbalance.models.factory import build_model
from modalbalance.pmr import PrototypeAccumulator, PrototypeBank
from modalbalance.training.checkpoint import save_checkpoint, write_json, write_text
from modalbalance.training.config import DEFAULTS, check_builder_params, dump_config, merge, validate
from modalbalance.training.data import BatchLoader, ModalitySubset, check_dataset, draw_subset
from modalbalance.training.evaluation import evaluate

logger = logging.getLogger("modalbalance")

RUN_FILES = ("metrics.jsonl", "summary.json", "last.pt")


def build_dataset(data_config: Mapping, split: str, seed: int) -> MultimodalDataset:
    import modalbalance.data  # noqa: F401  (registers the built-in data sets)
    from modalbalance.data.registry import DATASETS

    builder = DATASETS.get(data_config["name"])
    params = {key: value for key, value in data_config.items() if key not in ("name", "root", "modalities")}
    check_builder_params("data", builder, params, skip=3)
    dataset = builder(data_config.get("root"), split, seed, **params)
    if data_config.get("modalities"):
        dataset = ModalitySubset(dataset, data_config["modalities"])
    check_dataset(dataset, split, data_config["name"])
    return dataset


def build_optimizer(config: Mapping, model: torch.nn.Module) -> torch.optim.Optimizer:
    name, lr, weight_decay = config["name"], config["lr"], config["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=config["momentum"], weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.Adagrad(model.parameters(), lr=lr, weight_decay=weight_decay)


def build_scheduler(config: Mapping, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    if config["name"] == "none":
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config["step_size"], gamma=config["gamma"])


def default_run_dir(config: Mapping) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config['data']['name']}_{config['method']['name']}_{config['model']['fusion']}_{stamp}"


def prepare_run_dir(path: Path) -> Path:
    """Create the run directory; refuse to touch one that already holds a run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path {path} exists and is not a directory; choose another --out")
    existing = [name for name in RUN_FILES if (path / name).exists()]
    if existing:
        raise ConfigError(f"run directory {path} already contains a run ({existing[0]}); choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve(config: Mapping) -> dict:
    """Fill a partial config with defaults and validate it."""
    resolved = merge(DEFAULTS, config)
    validate(resolved)
    return resolved


class TrainingRun:
    """Everything one run needs, built from a resolved config."""

    def __init__(self, config: Mapping, out_dir: str | Path | None = None) -> None:
        self.config = resolve(config)
        train_config = self.config["train"]
        self.seed = self.config["seed"]
        self.epochs = train_config["epochs"]
        self.device = torch.device(train_config["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available; set train.device=cpu")

        seed_everything(self.seed)
        self.train_set = build_dataset(self.config["data"], "train", self.seed)
        self.test_set = build_dataset(self.config["data"], "test", self.seed)
        self.model = build_model(self.config["model"], self.train_set).to(self.device)
        self.optimizer = build_optimizer(self.config["optimizer"], self.model)
        self.scheduler = build_scheduler(self.config["scheduler"], self.optimizer)

        workers = train_config["num_workers"]
        eval_batch = train_config["eval_batch_size"]
        self.train_loader = BatchLoader(self.train_set, None, train_config["batch_size"], shuffle=True, seed=self.seed, num_workers=workers)
        self.test_loader = BatchLoader(self.test_set, None, eval_batch, shuffle=False, num_workers=workers)
        train_eval_indices = draw_subset(self.train_set.labels, train_config["train_eval_fraction"], self.seed + 7919, top_up=False)
        self.train_eval_loader = BatchLoader(self.train_set, train_eval_indices, eval_batch, shuffle=False, num_workers=workers)
        self._accumulators: dict[int, PrototypeAccumulator] = {}

        self.context = TrainingContext(
            model=self.model,
            train_set=self.train_set,
            device=self.device,
            epochs=self.epochs,
            seed=self.seed,
            prototype_accumulator=self.prototype_accumulator,
        )
        self.method = self._build_method()
        self.out_dir = prepare_run_dir(Path(out_dir) if out_dir is not None else default_run_dir(self.config))
        self.history: list[dict[str, Any]] = []

    def _build_method(self) -> BalancingMethod:
        method_config = self.config["method"]
        builder = METHODS.get(method_config["name"])
        params = {key: value for key, value in method_config.items() if key != "name"}
        check_builder_params("method", builder, params, skip=1)
        return builder(self.context, **params)

    # -- prototypes -------------------------------------------------------

    def prototype_accumulator(self, epoch: int) -> PrototypeAccumulator:
        """Return class sums over the prototype subset of ``epoch``, embedded with the current weights.

        The subset is redrawn for every epoch from (seed, epoch). The result is
        cached because the evaluation after epoch e and the method before epoch
        e + 1 see the same weights.
        """
        if epoch not in self._accumulators:
            train_config = self.config["train"]
            top_up = train_config["missing_class"] == "top-up"
            indices = draw_subset(self.train_set.labels, train_config["prototype_fraction"], self.seed * 1_000_003 + epoch + 1, top_up)
            loader = BatchLoader(self.train_set, indices, train_config["eval_batch_size"], shuffle=False, num_workers=train_config["num_workers"])
            bank = PrototypeBank(self.train_set.num_modalities, self.train_set.num_classes, class_names=self.train_set.class_names)
            accumulator = bank.compute(self._device_batches(loader), lambda inputs: self.model(inputs).embeddings, module=self.model)
            self._accumulators = {epoch: accumulator}
        return self._accumulators[epoch]

    def _device_batches(self, loader: BatchLoader, epoch: int = 0):
        for inputs, labels in loader.batches(epoch):
            yield tuple(x.to(self.device, non_blocking=True) for x in inputs), labels.to(self.device, non_blocking=True)

    # -- one epoch ----------------------------------------------------------

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.method.on_epoch_start(epoch)

        loss_sum, correct, seen = 0.0, 0, 0
        log_sums: dict[str, float] = defaultdict(float)
        step_records = []
        bar = tqdm(
            self._device_batches(self.train_loader, epoch),
            total=len(self.train_loader),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            leave=False,
            disable=not self.config["train"]["progress"],
        )
        for step, (inputs, labels) in enumerate(bar):
            inputs, labels = self.method.transform_batch(inputs, labels, epoch)
            output = self.model(inputs)
            self._check_finite(output.embeddings, epoch, step)
            loss, logs = self.method.compute_loss(output, labels, epoch)

            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.method.on_after_backward(output, labels, epoch)
            self.optimizer.step()

            batch_size = labels.numel()
            loss_value = float(loss.detach())
            loss_sum += loss_value * batch_size
            correct += int((output.logits.detach().argmax(dim=1) == labels).sum())
            seen += batch_size
            for key, value in logs.items():
                log_sums[key] += value
            if logs:
                step_records.append({"epoch": epoch, "step": step, **logs})
            bar.set_postfix(loss=f"{loss_value:.3f}")

        self.method.on_epoch_end(epoch)
        if step_records:
            with open(self.out_dir / "steps.jsonl", "a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in step_records)
        steps = max(1, len(self.train_loader))
        metrics = {"train/loss": loss_sum / max(1, seen), "train/running_accuracy": correct / max(1, seen)}
        metrics.update({key: value / steps for key, value in log_sums.items()})
        return metrics

    def _check_finite(self, embeddings, epoch: int, step: int) -> None:
        for name, embedding in zip(self.train_set.modality_names, embeddings):
            if not torch.isfinite(embedding).all():
                raise TrainingError(
                    f"non-finite embedding of modality {name!r} at epoch {epoch}, step {step}; "
                    "lower optimizer.lr or check the input data for NaN values"
                )

    def evaluate_epoch(self, epoch: int) -> dict[str, float]:
        bank = PrototypeBank(self.train_set.num_modalities, self.train_set.num_classes, class_names=self.train_set.class_names)
        bank.update(self.prototype_accumulator(epoch + 1))
        metrics = {}
        names = self.train_set.modality_names
        for split, loader in (("train", self.train_eval_loader), ("test", self.test_loader)):
            for key, value in evaluate(self.model, self._device_batches(loader), names, bank, self.device).items():
                metrics[f"{split}/{key}"] = value
        return metrics

    # -- the whole run ------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        write_text(dump_config(self.config), self.out_dir / "config.yaml")
        logger.info("run directory: %s", self.out_dir)
        logger.info(
            "training %s with %s fusion on %s (%d train / %d test samples, modalities %s) for %d epochs",
            self.config["method"]["name"],
            self.config["model"]["fusion"],
            self.config["data"]["name"],
            len(self.train_set),
            len(self.test_set),
            ", ".join(self.train_set.modality_names),
            self.epochs,
        )
        started = time.perf_counter()
        for epoch in range(self.epochs):
            epoch_started = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            record.update(self.train_one_epoch(epoch))
            if self.scheduler is not None:
                self.scheduler.step()
            record.update(self.evaluate_epoch(epoch))
            record["seconds"] = time.perf_counter() - epoch_started
            self.history.append(record)
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            logger.info(format_epoch(record, self.train_set.modality_names, self.epochs))
            if self.config["train"]["checkpoint"]:
                self.save(epoch)

        summary = self.summary(time.perf_counter() - started)
        write_json(summary, self.out_dir / "summary.json")
        return summary

    def save(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "config": self.config,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "method": self.method.state_dict(),
            "history": self.history,
            "modality_names": self.train_set.modality_names,
            "class_names": self.train_set.class_names,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        }
        save_checkpoint(state, self.out_dir / "last.pt")

    def summary(self, seconds: float) -> dict[str, Any]:
        final = self.history[-1]
        names = self.train_set.modality_names
        summary = {
            "run_dir": str(self.out_dir),
            "dataset": self.config["data"]["name"],
            "method": self.config["method"]["name"],
            "fusion": self.config["model"]["fusion"],
            "seed": self.seed,
            "epochs": self.epochs,
            "test_accuracy": final["test/accuracy"],
            "train_accuracy": final["train/accuracy"],
            "modality_test_accuracy": {name: final[f"test/prototype_accuracy/{name}"] for name in names},
            "modality_train_accuracy": {name: final[f"train/prototype_accuracy/{name}"] for name in names},
            "best_test_accuracy": max(record["test/accuracy"] for record in self.history),
            "seconds": seconds,
        }
        if f"test/head_accuracy/{names[0]}" in final:
            summary["modality_head_test_accuracy"] = {name: final[f"test/head_accuracy/{name}"] for name in names}
        return summary


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
    rows.append(("best fused test accuracy", f"{summary['best_test_accuracy']:.4f}"))
    rows.append(("wall time (s)", f"{summary['seconds']:.1f}"))
    width = max(len(label) for label, _ in rows)
    title = f"{summary['method']} / {summary['fusion']} / {summary['dataset']} (seed {summary['seed']}, {summary['epochs']} epochs)"
    lines = [title, "-" * max(len(title), width + 12)]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines.append(f"run directory: {summary['run_dir']}")
    return "\n".join(lines)


def train(config: Mapping, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Train from a (possibly partial) config and return the run summary."""
    run = TrainingRun(config, out_dir)
    return run.fit()
