"""CentralNet: a central branch that sums learned-weighted hidden representations of every modality's stages.

Vielzeuf, Lechervy, Pateux and Jurie, "CentralNet: a Multilayer Approach for
Multimodal Fusion", ECCV Workshops 2018. Each modality keeps its own stream
(its data set's default encoder, run stage by stage) and its own linear head.
With ``p_m^i`` the stage-i features of modality m, average-pooled over every
position to ``[B, C_i]``:

- ``c^1 = sum_m a_m^1 p_m^1``;
- ``c^i = a_c^i relu(L_i c^(i-1)) + sum_m a_m^i p_m^i`` for the later stages,
  with ``L_i`` a linear layer ``C_(i-1) -> C_i``;
- the fused logits are ``head_c(relu(L_out c^S))`` after the last stage S.

The weights ``a`` are learned scalars, initialised to 1. The fused logits
are ``ModelOutput.logits``; each modality's own head gives
``modality_logits``. CentralNet trains every head: ``auxiliary_loss`` returns
``unimodal_loss_weight * sum_m CE(modality_logits_m, y)``, which the trainer
adds to the method's loss.

NOTE: the original CentralNet combines same-sized feature maps with
convolutional central layers. Pooling the stage outputs first lets modalities
with different input sizes (a spectrogram and video frames) share one central
branch, at the cost of the central branch's spatial detail.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.data.base import MultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.models.base import ModelOutput
from modalbalance.models.mmtm import build_staged_encoders, reject_unknown_params
from modalbalance.models.registry import MODELS


class CentralBranch(nn.Module):
    """The central branch: learned weighted sums of the pooled stage outputs, with a linear layer between stages."""

    def __init__(self, num_modalities: int, stage_channels: Sequence[int], embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.stage_channels = tuple(stage_channels)
        stages = len(self.stage_channels)
        # modality_weights[i, m] is a_m^i; central_weights[i] is a_c^i (unused at stage 0, which has no central input).
        self.modality_weights = nn.Parameter(torch.ones(stages, num_modalities))
        self.central_weights = nn.Parameter(torch.ones(stages))
        self.layers = nn.ModuleList(nn.Linear(self.stage_channels[i - 1], self.stage_channels[i]) for i in range(1, stages))
        self.output = nn.Linear(self.stage_channels[-1], embedding_dim)
        self.head = nn.Linear(embedding_dim, num_classes)

    def combine(self, index: int, central: torch.Tensor | None, pooled: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return ``c^i`` from ``c^(i-1)`` (None at the first stage) and the pooled stage-i features of every modality."""
        combined = sum(self.modality_weights[index, m] * p for m, p in enumerate(pooled))
        if central is not None:
            combined = combined + self.central_weights[index] * torch.relu(self.layers[index - 1](central))
        return combined

    def logits(self, central: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.output(central)))


class CentralNetModel(nn.Module):
    """One stream and one linear head per modality, plus the central branch that gives the fused logits.

    ``encoders[m]`` contains every parameter of modality m's stream; the
    central branch and the heads belong to no single modality.
    """

    def __init__(self, encoders: nn.ModuleList, num_classes: int, embedding_dim: int, unimodal_loss_weight: float = 1.0) -> None:
        super().__init__()
        self.encoders = encoders
        self.central = CentralBranch(len(encoders), encoders[0].stage_channels, embedding_dim, num_classes)
        self.heads = nn.ModuleList(nn.Linear(embedding_dim, num_classes) for _ in encoders)
        self.unimodal_loss_weight = unimodal_loss_weight

    def forward(self, inputs: Sequence[torch.Tensor]) -> ModelOutput:
        if len(inputs) != len(self.encoders):
            raise ValueError(f"got {len(inputs)} inputs for {len(self.encoders)} encoders")
        features = [encoder.begin(x) for encoder, x in zip(self.encoders, inputs)]
        central = None
        for index in range(self.encoders[0].num_stages):
            features = [encoder.stage(index, h) for encoder, h in zip(self.encoders, features)]
            central = self.central.combine(index, central, [h.flatten(2).mean(dim=2) for h in features])
        embeddings = tuple(encoder.finish(h) for encoder, h in zip(self.encoders, features))
        return ModelOutput(
            logits=self.central.logits(central),
            embeddings=embeddings,
            modality_logits=tuple(head(z) for head, z in zip(self.heads, embeddings)),
        )

    def auxiliary_loss(self, output: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """Return ``unimodal_loss_weight * sum_m CE(modality_logits_m, labels)``, which trains the per-modality heads."""
        losses = [F.cross_entropy(logits, labels) for logits in output.modality_logits]
        return self.unimodal_loss_weight * torch.stack(losses).sum()


@MODELS.register("centralnet")
def build_centralnet(dataset: MultimodalDataset, embedding_dim: int, unimodal_loss_weight: float = 1.0, **unknown) -> CentralNetModel:
    """Build CentralNet on the data set's default encoders; their stages must have matching channel counts."""
    reject_unknown_params("centralnet", unknown, "unimodal_loss_weight")
    if isinstance(unimodal_loss_weight, bool) or not isinstance(unimodal_loss_weight, (int, float)) or not (math.isfinite(unimodal_loss_weight) and unimodal_loss_weight >= 0):
        raise ConfigError(f"fusion 'centralnet' needs unimodal_loss_weight to be a number >= 0; got {unimodal_loss_weight!r}")
    if dataset.num_modalities < 2:
        raise ConfigError(f"fusion 'centralnet' needs at least two modalities; got {dataset.num_modalities}")
    encoders = build_staged_encoders(dataset, embedding_dim, "centralnet")
    channels = {encoder.stage_channels for encoder in encoders}
    if len(channels) != 1:
        raise ConfigError(
            f"fusion 'centralnet' needs encoders whose stages have the same channel counts; got {sorted(channels)}"
        )
    return CentralNetModel(encoders, dataset.num_classes, embedding_dim, float(unimodal_loss_weight))
