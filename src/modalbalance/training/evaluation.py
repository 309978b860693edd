"""Accuracy of the fused model, of each modality's prototype classifier and of each modality's linear head."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.pmr import PrototypeBank


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[tuple[torch.Tensor, ...], torch.Tensor]],
    modality_names: Sequence[str],
    bank: PrototypeBank,
    device: torch.device,
) -> dict[str, float]:
    """Evaluate ``model`` in eval mode over every batch and return metric name -> value.

    Keys: ``loss``, ``accuracy`` (fused), ``prototype_accuracy/<modality>``
    (nearest prototype of that modality's embedding) and, when the fusion
    decomposes, ``head_accuracy/<modality>`` (argmax of that modality's share
    of the fused logits).
    """
    was_training = model.training
    model.eval()
    total = 0
    loss_sum = 0.0
    fused_correct = 0
    prototype_correct = torch.zeros(len(modality_names), dtype=torch.long)
    head_correct = torch.zeros(len(modality_names), dtype=torch.long)
    decomposes = True
    try:
        for inputs, labels in batches:
            inputs = tuple(x.to(device) for x in inputs)
            labels = labels.to(device)
            output = model(inputs)
            total += labels.numel()
            loss_sum += float(F.cross_entropy(output.logits, labels, reduction="sum"))
            fused_correct += int((output.logits.argmax(dim=1) == labels).sum())
            for m, logits in enumerate(bank.logits(output.embeddings)):
                prototype_correct[m] += int((logits.argmax(dim=1) == labels).sum())
            if output.modality_logits is None:
                decomposes = False
            else:
                for m, logits in enumerate(output.modality_logits):
                    head_correct[m] += int((logits.argmax(dim=1) == labels).sum())
    finally:
        model.train(was_training)

    if total == 0:
        raise ValueError("evaluation received no samples")
    metrics = {"loss": loss_sum / total, "accuracy": fused_correct / total}
    for m, name in enumerate(modality_names):
        metrics[f"prototype_accuracy/{name}"] = int(prototype_correct[m]) / total
    if decomposes:
        for m, name in enumerate(modality_names):
            metrics[f"head_accuracy/{name}"] = int(head_correct[m]) / total
    return metrics
