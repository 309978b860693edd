"""Angles between the gradient an encoder receives from the fused loss and from its own unimodal loss.

For encoder m with parameters theta_m, the fused loss is the cross-entropy of
the fused logits and the unimodal loss is

- the cross-entropy of modality m's share of the fused logits
  (``ModelOutput.modality_logits[m]``) when the fusion splits into per-modality
  logits (concat, sum), else
- the prototypical cross-entropy of modality m's embedding under a
  ``PrototypeBank`` (film, gated).

Both gradients, ``d fused / d theta_m`` and ``d unimodal / d theta_m``, are
flattened over all of the encoder's parameters. Their angle shows how far joint
training steers the encoder away from what its own modality would teach it.
0 degrees means the same direction, and 90 degrees unrelated directions.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.pmr import PrototypeBank, prototypical_cross_entropy

Batch = tuple[Sequence[torch.Tensor], torch.Tensor]


def vector_angle(first: torch.Tensor, second: torch.Tensor) -> float:
    """Return the angle between two vectors in degrees, or NaN when either is zero.

    Uses ``2 * atan2(| a |b| - b |a| |, | a |b| + b |a| |)`` in float64, which
    stays accurate near 0 and 180 degrees, where ``arccos`` of the cosine
    loses about half of the significant digits.
    """
    first = first.detach().to(torch.float64).flatten()
    second = second.detach().to(torch.float64).flatten()
    first_norm, second_norm = first.norm(), second.norm()
    if first_norm == 0 or second_norm == 0:
        return math.nan
    scaled_first, scaled_second = first * second_norm, second * first_norm
    radians = 2.0 * torch.atan2((scaled_first - scaled_second).norm(), (scaled_first + scaled_second).norm())
    return math.degrees(float(radians))


def _flat_gradient(loss: torch.Tensor, parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    gradients = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    # A parameter that the loss does not reach gets a zero gradient.
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gradients, parameters)])


def _resolve_names(model: nn.Module, count: int, modality_names: Sequence[str] | None) -> list[str]:
    names = modality_names if modality_names is not None else getattr(model, "modality_names", None)
    if names is None:
        return [str(m) for m in range(count)]
    if len(names) != count:
        raise ValueError(f"got {len(names)} modality names for a model with {count} encoders")
    return list(names)


def gradient_angles(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    labels: torch.Tensor,
    bank: PrototypeBank | None = None,
    modality_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Return modality name -> angle in degrees between its encoder's fused-loss and unimodal-loss gradients.

    ``model`` must have an ``encoders`` list (one module per modality, as
    ``LateFusionModel``) and return a ``ModelOutput``. ``bank`` is needed only
    when the fusion does not split into per-modality logits. Names default to
    ``modality_names`` or ``model.modality_names``, else ``"0"``, ``"1"``, ...
    An encoder whose gradients are all zero (or that has no trainable
    parameters) gets NaN.

    The forward pass runs in eval mode, so batch-norm statistics do not move
    and dropout neither draws random numbers nor changes the angle. The
    model's mode is restored afterwards. Gradients come from
    ``torch.autograd.grad``, so the parameters' ``.grad`` stay as they were.
    """
    encoders = getattr(model, "encoders", None)
    if encoders is None:
        raise ValueError(f"{type(model).__name__} has no 'encoders'; gradient angles need one encoder module per modality")
    names = _resolve_names(model, len(encoders), modality_names)

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            output = model(inputs)
            fused_loss = F.cross_entropy(output.logits, labels)
            if output.modality_logits is not None:
                unimodal_losses = [F.cross_entropy(logits, labels) for logits in output.modality_logits]
            elif bank is not None:
                unimodal_losses = [prototypical_cross_entropy(logits, labels) for logits in bank.logits(output.embeddings)]
            else:
                raise ValueError(
                    "this fusion does not split into per-modality logits, so the unimodal loss is the prototypical "
                    "cross-entropy; pass a PrototypeBank as bank"
                )

            angles = {}
            for name, encoder, unimodal_loss in zip(names, encoders, unimodal_losses):
                parameters = [p for p in encoder.parameters() if p.requires_grad]
                if not parameters:
                    angles[name] = math.nan
                    continue
                fused_gradient = _flat_gradient(fused_loss, parameters)
                unimodal_gradient = _flat_gradient(unimodal_loss, parameters)
                angles[name] = vector_angle(fused_gradient, unimodal_gradient)
    finally:
        model.train(was_training)
    return angles


def epoch_gradient_angles(
    model: nn.Module,
    batches: Iterable[Batch],
    modality_names: Sequence[str],
    bank: PrototypeBank | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Average ``gradient_angles`` over batches and return ``{"gradient_angle/<modality>": degrees}``.

    Each batch counts once, whatever its size. Inputs and labels move to the
    device of the model's first parameter. NaN angles (zero gradients) are left
    out of the mean, and a modality with no finite angle gets NaN. At most
    ``max_batches`` batches are read when it is given.
    """
    if max_batches is not None:
        batches = itertools.islice(batches, max_batches)
    device = next(model.parameters()).device
    sums = {name: 0.0 for name in modality_names}
    counts = {name: 0 for name in modality_names}
    for inputs, labels in batches:
        inputs = tuple(x.to(device) for x in inputs)
        angles = gradient_angles(model, inputs, labels.to(device), bank, modality_names)
        for name, angle in angles.items():
            if math.isfinite(angle):
                sums[name] += angle
                counts[name] += 1
    return {f"gradient_angle/{name}": sums[name] / counts[name] if counts[name] else math.nan for name in modality_names}
