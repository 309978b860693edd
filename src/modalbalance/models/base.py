"""The model contract: one embedding per modality, fused logits, and optional per-modality logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass
class ModelOutput:
    """The output of a multimodal model for one batch.

    Attributes:
        logits: ``[B, K]`` fused class logits.
        embeddings: one ``[B, D_m]`` embedding per modality. PMR computes its
            prototypes and losses from these, so they must carry gradients to
            their own encoder.
        modality_logits: one ``[B, K]`` tensor per modality when the fusion
            decomposes into per-modality linear parts (concat, sum), else None.
    """

    logits: torch.Tensor
    embeddings: tuple[torch.Tensor, ...]
    modality_logits: tuple[torch.Tensor, ...] | None = None


class Fusion(nn.Module):
    """Base class of fusion heads: map per-modality embeddings to class logits."""

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def modality_logits(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...] | None:
        """Return each modality's share of the logits, or None when the fusion does not decompose."""
        return None


class LateFusionModel(nn.Module):
    """Independent encoders, one per modality, followed by a fusion head."""

    def __init__(self, encoders: Sequence[nn.Module], fusion: Fusion) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.fusion = fusion

    def encode(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.encoders):
            raise ValueError(f"got {len(inputs)} inputs for {len(self.encoders)} encoders")
        return tuple(encoder(x) for encoder, x in zip(self.encoders, inputs))

    def forward(self, inputs: Sequence[torch.Tensor]) -> ModelOutput:
        embeddings = self.encode(inputs)
        return ModelOutput(
            logits=self.fusion(embeddings),
            embeddings=embeddings,
            modality_logits=self.fusion.modality_logits(embeddings),
        )
