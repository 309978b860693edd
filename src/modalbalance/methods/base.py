"""The plug-in points of the training step that balancing methods implement.

Before the first epoch the trainer calls ``method.training_indices(indices)``
once, so a method can hold part of the training set out of training (for
example to estimate generalization). Then, for every epoch::

    method.on_epoch_start(epoch)
    for each batch:
        inputs, labels = method.transform_batch(inputs, labels, epoch)
        output = model(inputs)
        loss, logs = method.compute_loss(output, labels, epoch)
        loss.backward()
        method.on_after_backward(output, labels, epoch)
        optimizer.step()
    method.on_epoch_end(epoch)

The base class is the naive method: plain cross-entropy on the fused logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.data.base import MultimodalDataset
from modalbalance.models.base import ModelOutput
from modalbalance.pmr import PrototypeAccumulator
from modalbalance.registry import Registry


@dataclass
class TrainingContext:
    """The parts of a training run that a method may read."""

    model: nn.Module
    train_set: MultimodalDataset
    device: torch.device
    epochs: int
    seed: int
    # Returns the per-class embedding sums over the prototype subset drawn for
    # an epoch, computed in eval mode and cached, so the trainer's evaluation
    # and the method share one pass.
    prototype_accumulator: Callable[[int], PrototypeAccumulator]
    extras: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.train_set.num_classes

    @property
    def num_modalities(self) -> int:
        return self.train_set.num_modalities

    @property
    def modality_names(self) -> tuple[str, ...]:
        return self.train_set.modality_names


class BalancingMethod:
    """Naive joint training; subclasses override the hooks they need."""

    def __init__(self, context: TrainingContext) -> None:
        self.context = context

    def training_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the training-set indices to train on; the default keeps them all."""
        return indices

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def transform_batch(self, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, epoch: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return inputs, labels

    def compute_loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss to minimise and scalars to log (averaged over the epoch)."""
        return F.cross_entropy(output.logits, labels), {}

    def on_after_backward(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


METHODS: Registry[BalancingMethod] = Registry("method")


@METHODS.register("naive")
def build_naive(context: TrainingContext) -> BalancingMethod:
    return BalancingMethod(context)


@METHODS.register("unimodal")
def build_unimodal(context: TrainingContext, modality: str | None = None) -> BalancingMethod:
    """Naive training of one modality alone; the trainer narrows the data to ``modality`` first."""
    return BalancingMethod(context)
