"""Build the parts of a training run from a resolved config: data sets, validation, optimizer, scheduler."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from modalbalance.data.base import MultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.training.config import DEFAULTS, check_builder_params, merge, validate
from modalbalance.training.data import ModalitySubset, check_dataset, draw_subset

logger = logging.getLogger("modalbalance")

# Methods whose updates stay the same on every process: their losses are
# per-sample means whose coefficients come from reduced batch statistics.
# Methods checked to train under DDP like one process over the same global
# batches. modality-drop draws its mask per local batch, and gradient-blending
# calls its auxiliary heads outside the wrapped model's forward pass; neither
# is checked yet.
DISTRIBUTED_METHODS = ("naive", "unimodal", "pmr", "pmr-no-per", "ogm-ge", "acc")


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


def build_validation(config: Mapping, train_set: MultimodalDataset, seed: int) -> tuple[MultimodalDataset | None, torch.Tensor | None]:
    """Return the validation data set and, when it is carved from the training set, the held-out indices.

    A data set with a split of its own named ``val`` uses it. Otherwise
    ``train.val_fraction`` > 0 holds out a seeded random part of the training
    set, which is then not trained on. With neither there is no validation.
    """
    fraction = config["train"]["val_fraction"]
    if fraction > 0:
        return train_set, draw_subset(train_set.labels, fraction, seed + 104_729, top_up=False)
    try:
        return build_dataset(config["data"], "val", seed), None
    except ConfigError:
        logger.debug("data set %s has no validation split and train.val_fraction is 0", config["data"]["name"])
        return None, None


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve(config: Mapping) -> dict:
    """Fill a partial config with defaults, expand the ``unimodal`` method and validate the result."""
    resolved = merge(DEFAULTS, config)
    validate(resolved)
    # An absolute data root keeps --resume and evaluate working from any directory.
    root = resolved["data"].get("root")
    if isinstance(root, str) and root:
        resolved["data"]["root"] = str(Path(root).expanduser().resolve())
    return expand_unimodal(resolved)


def expand_unimodal(config: dict) -> dict:
    """Turn ``method: {name: unimodal, modality: M}`` into naive training on modality M alone.

    With one modality, every fusion reduces to that encoder and its own linear
    head (concat and sum), which is the paper's uni-modal baseline.
    """
    method = config["method"]
    if method["name"] != "unimodal":
        return config
    unknown = sorted(set(method) - {"name", "modality"})
    if unknown:
        raise ConfigError(f"unknown key method.{unknown[0]}; the unimodal method takes only 'modality'")
    if not isinstance(method.get("modality"), str):
        raise ConfigError("the unimodal method needs method.modality, the name of the modality to train alone, for example method.modality=gray")
    if config["model"]["fusion"] not in ("concat", "sum"):
        raise ConfigError(f"the unimodal method needs model.fusion concat or sum; got {config['model']['fusion']!r}")
    config = merge(config, {"data": {"modalities": [method["modality"]]}})
    config["method"] = {"name": "naive", "unimodal": method["modality"]}
    return config


def check_distributed_method(name: str) -> None:
    if name not in DISTRIBUTED_METHODS:
        raise ConfigError(
            f"method {name!r} does not support distributed training yet; "
            f"use one of {', '.join(DISTRIBUTED_METHODS)} or train in one process"
        )
