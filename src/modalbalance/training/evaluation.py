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

    Keys: ``loss``, ``accuracy`` (fused), ``true_class_score`` (mean softmax
    probability of the true class under the fused logits),
    ``prototype_accuracy/<modality>`` (nearest prototype of that modality's
    embedding) and, when the fusion decomposes, ``head_accuracy/<modality>``
    (argmax of that modality's share of the fused logits) and
    ``head_true_class_score/<modality>``.
    """
    was_training = model.training
    model.eval()
    total = 0
    loss_sum = 0.0
    fused_correct = 0
    fused_score = 0.0
    head_score = torch.zeros(len(modality_names), dtype=torch.float64)
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
            fused_score += float(true_class_probability(output.logits, labels).sum())
            for m, logits in enumerate(bank.logits(output.embeddings)):
                prototype_correct[m] += int((logits.argmax(dim=1) == labels).sum())
            if output.modality_logits is None:
                decomposes = False
            else:
                for m, logits in enumerate(output.modality_logits):
                    head_correct[m] += int((logits.argmax(dim=1) == labels).sum())
                    head_score[m] += float(true_class_probability(logits, labels).sum())
    finally:
        model.train(was_training)

    if total == 0:
        raise ValueError("evaluation received no samples")
    metrics = {"loss": loss_sum / total, "accuracy": fused_correct / total, "true_class_score": fused_score / total}
    for m, name in enumerate(modality_names):
        metrics[f"prototype_accuracy/{name}"] = int(prototype_correct[m]) / total
    if decomposes:
        for m, name in enumerate(modality_names):
            metrics[f"head_accuracy/{name}"] = int(head_correct[m]) / total
            metrics[f"head_true_class_score/{name}"] = float(head_score[m]) / total
    return metrics


def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
