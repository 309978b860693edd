"""Acc: scale up the slow modality's encoder gradients instead of scaling down the dominant one's.

Fan et al., "PMR: Prototypical Modal Rebalance for Multimodal Learning"
(CVPR 2023) use this as the mirror image of OGM-GE to show that scaling
gradient magnitudes alone does not let the slow modality catch up. The scores,
ratios and modulation window are those of OGM-GE (``ogm_ge.py``); the rule is
our own choice, since the paper describes Acc only in words:

- ``ratio^m = s^m / s^other`` (for more than two modalities, over the mean of
  the others' scores);
- ``k^m = 1 + tanh(alpha * relu(1 / ratio^m - 1))``, so a modality scoring
  below the others (ratio under 1) gets ``1 < k < 2`` and the dominant one
  gets exactly 1;
- after backward, every gradient of the slow modality's encoder is multiplied
  by ``k``. No noise is added.
"""

from __future__ import annotations

import torch

from modalbalance.methods.base import METHODS, TrainingContext
from modalbalance.methods.ogm_ge import GradientModulation, check_alpha, check_window, check_decomposable, score_ratios


def acc_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """Return ``k^m = 1 + tanh(alpha * relu(1 / ratio^m - 1))``: above 1 for the slow modality, 1 for the others."""
    ratios = score_ratios(scores)
    return 1.0 + torch.tanh(alpha * torch.relu(1.0 / ratios - 1.0))


class Acc(GradientModulation):
    """Multiply the slow modality's encoder gradients by ``1 + tanh(alpha * relu(1 / ratio - 1))``."""

    name = "acc"

    def coefficients(self, scores: torch.Tensor) -> torch.Tensor:
        return acc_coefficients(scores, self.alpha)


@METHODS.register("acc")
def build_acc(
    context: TrainingContext,
    alpha: float = 1.0,
    modulation_start: int = 0,
    modulation_end: int | None = None,
) -> Acc:
    """Acc, the gradient-amplifying counterpart of OGM-GE; needs concat or sum fusion."""
    check_alpha("acc", alpha)
    check_window(modulation_start, modulation_end)
    check_decomposable(context, "acc")
    return Acc(context, alpha, modulation_start, modulation_end)
