"""Modality dropout: during training, replace one modality's input with zeros at random.

The baseline "Modality-Drop" of Table 2 in Fan et al., "PMR: Prototypical
Modal Rebalance for Multimodal Learning", CVPR 2023. Rule, per training sample:

- with probability ``drop_probability`` one modality is dropped, chosen
  uniformly among ``modalities`` (the droppable ones; all by default);
- the dropped modality's input tensor for that sample is replaced by zeros.
  At most one modality per sample is dropped, so with two modalities every
  sample keeps at least one.

The draws depend only on (seed, epoch, step), so a run repeats exactly.
Evaluation and the prototype passes see the inputs unchanged.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from modalbalance.errors import ConfigError
from modalbalance.methods.base import METHODS, BalancingMethod, TrainingContext
from modalbalance.models.base import ModelOutput


def drop_mask(batch_size: int, num_modalities: int, droppable: Sequence[int], drop_probability: float, seed: Sequence[int]) -> torch.Tensor:
    """Return a ``[batch_size, num_modalities]`` boolean mask of the inputs to zero.

    ``seed`` is a sequence of integers such as (run seed, epoch, step). Each
    row has at most one True, in a column listed in ``droppable``.
    """
    rng = np.random.default_rng([int(s) for s in seed])
    dropped = rng.random(batch_size) < drop_probability
    choice = rng.integers(len(droppable), size=batch_size)
    mask = np.zeros((batch_size, num_modalities), dtype=bool)
    rows = np.nonzero(dropped)[0]
    mask[rows, np.asarray(droppable)[choice[rows]]] = True
    return torch.from_numpy(mask)


def apply_drop(inputs: Sequence[torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Replace ``inputs[m][i]`` by zeros wherever ``mask[i, m]`` is True; other samples are returned unchanged."""
    dropped = []
    for m, x in enumerate(inputs):
        column = mask[:, m].to(x.device).view(-1, *([1] * (x.dim() - 1)))
        dropped.append(torch.where(column, torch.zeros((), dtype=x.dtype, device=x.device), x))
    return tuple(dropped)


class ModalityDrop(BalancingMethod):
    """Plain cross-entropy on inputs where one modality per sample is zeroed with probability ``drop_probability``."""

    def __init__(self, context: TrainingContext, drop_probability: float, droppable: Sequence[int]) -> None:
        super().__init__(context)
        self.drop_probability = drop_probability
        self.droppable = tuple(droppable)
        self._step = 0
        self._dropped_fraction: torch.Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        self._step = 0

    def transform_batch(self, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, epoch: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        mask = drop_mask(labels.numel(), len(inputs), self.droppable, self.drop_probability, (self.context.seed, epoch, self._step))
        self._step += 1
        self._dropped_fraction = mask.float().mean(dim=0)
        return apply_drop(inputs, mask), labels

    def compute_loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        logs = {}
        if self._dropped_fraction is not None:
            for name, fraction in zip(self.context.modality_names, self._dropped_fraction.tolist()):
                logs[f"dropped_fraction/{name}"] = fraction
        return F.cross_entropy(output.logits, labels), logs


@METHODS.register("modality-drop")
def build_modality_drop(context: TrainingContext, drop_probability: float = 0.5, modalities: list[str] | None = None) -> ModalityDrop:
    """Modality dropout; ``modalities`` names the droppable modalities (null: all of them)."""
    if context.num_modalities < 2:
        raise ConfigError(f"method 'modality-drop' needs at least two modalities; got {context.num_modalities}")
    if isinstance(drop_probability, bool) or not isinstance(drop_probability, (int, float)) or not (
        math.isfinite(drop_probability) and 0.0 <= drop_probability <= 1.0
    ):
        raise ConfigError(f"method 'modality-drop' needs drop_probability in [0, 1]; got {drop_probability!r}")
    if modalities is None:
        droppable = list(range(context.num_modalities))
    else:
        if isinstance(modalities, str) or not isinstance(modalities, (list, tuple)) or not modalities:
            raise ConfigError(f"method 'modality-drop' needs modalities to be null or a non-empty list of modality names; got {modalities!r}")
        droppable = []
        for name in modalities:
            if name not in context.modality_names:
                raise ConfigError(
                    f"method 'modality-drop' got unknown modality {name!r} in modalities; this data set has {', '.join(context.modality_names)}"
                )
            position = context.modality_names.index(name)
            if position not in droppable:
                droppable.append(position)
    return ModalityDrop(context, float(drop_probability), droppable)
