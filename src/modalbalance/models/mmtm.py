"""MMTM: the Multimodal Transfer Module between the last stages of two (or more) CNN streams.

Joze, Shaban, Iuzzolino and Koishida, "MMTM: Multimodal Transfer Module for
CNN Fusion", CVPR 2020. After a stage, with ``F_m`` of shape ``[B, C_m, ...]``
the feature maps of modality m:

- squeeze: ``S_m = mean of F_m over every position`` (``[B, C_m]``);
- joint representation: ``Z = relu(W [S_0; S_1; ...] + b)`` with
  ``sum_m C_m // reduction`` units (the MMTM paper uses reduction 4);
- excitation: ``E_m = W_m Z + b_m`` and ``F_m <- 2 * sigmoid(E_m) * F_m``,
  one gate per channel, broadcast over the positions.

A gate of 1 (``E_m = 0``) leaves the features unchanged. Each modality's
stream is its data set's default encoder, run stage by stage
(``StagedEncoder``). By default the CG-MNIST CNN gets an MMTM after its last
two convolutions, and ResNet18 after its last three residual stages as in
Table 3 of Fan et al., "PMR: Prototypical Modal Rebalance for Multimodal
Learning", CVPR 2023. The embeddings go to a late fusion head (``sum`` by
default, so per-modality logits exist).

The staged encoders also serve CentralNet (``centralnet.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from modalbalance.data.base import MultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.models.base import ModelOutput
from modalbalance.models.registry import ENCODERS, FUSIONS, MODELS
from modalbalance.models.resnet import ResNet18Encoder, ResNet18FramesEncoder

# -- encoders run stage by stage ----------------------------------------------


class StagedEncoder(nn.Module):
    """An encoder split into stages, so that fusion modules can act between them.

    ``begin`` maps the input to the first stage's input; ``stage(i, h)`` runs
    stage i; ``finish`` maps the last stage's output to the embedding. Between
    stages the features are ``[B, C, ...]``: channels second, one row per sample.
    Running ``begin``, every stage and ``finish`` in order equals the
    wrapped encoder's ``forward``.
    """

    stage_channels: tuple[int, ...]
    # Number of final stages that get an MMTM by default.
    default_mmtm_stages: int

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    def begin(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def stage(self, index: int, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.begin(x)
        for index in range(self.num_stages):
            h = self.stage(index, h)
        return self.finish(h)


class SequentialCNNStages(StagedEncoder):
    """Stages of an encoder with a ``features`` Sequential and a ``projection`` (CGMNISTEncoder, SmallCNN).

    Each stage runs from one ``Conv2d`` up to the next; the layers from the
    first ``AdaptiveAvgPool2d`` on, then the projection, form ``finish``.
    """

    default_mmtm_stages = 2

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__(encoder)
        layers = list(encoder.features)
        convolutions = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
        pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.AdaptiveAvgPool2d)]
        if not convolutions or not pools or pools[0] < convolutions[-1]:
            raise ConfigError(f"encoder {type(encoder).__name__} has no Conv2d stages followed by an adaptive pool; it cannot be run stage by stage")
        bounds = [*convolutions, pools[0]]
        self.stage_slices = [(bounds[i], bounds[i + 1]) for i in range(len(convolutions))]
        self.finish_start = pools[0]
        self.stage_channels = tuple(layers[i].out_channels for i in convolutions)

    def begin(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def stage(self, index: int, h: torch.Tensor) -> torch.Tensor:
        start, end = self.stage_slices[index]
        for layer in self.encoder.features[start:end]:
            h = layer(h)
        return h

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.features[self.finish_start :]:
            h = layer(h)
        return self.encoder.projection(h)


class ResNet18Stages(StagedEncoder):
    """The four residual stages of ``ResNet18Encoder`` (``[B, C, H, W]`` input)."""

    default_mmtm_stages = 3

    def __init__(self, encoder: ResNet18Encoder) -> None:
        super().__init__(encoder)
        backbone = encoder.backbone
        self.layers = (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
        self.stage_channels = tuple(layer[-1].conv2.out_channels for layer in self.layers)

    def begin(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"resnet18 expects [B, C, H, W] input; got shape {tuple(x.shape)}")
        return self.encoder.backbone.stem(x)

    def stage(self, index: int, h: torch.Tensor) -> torch.Tensor:
        return self.layers[index](h)

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        return self.encoder.projection(h.mean(dim=(2, 3)))


class ResNet18FramesStages(ResNet18Stages):
    """The four residual stages of ``ResNet18FramesEncoder``, with features kept as ``[B, C, T, H, W]``.

    Every frame goes through the same 2-D stages. Between stages the frames
    of one clip form one sample, so that a squeeze pools over time and space.
    """

    def begin(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"resnet18-frames expects [B, T, C, H, W] input; got shape {tuple(x.shape)}")
        batch_size = x.shape[0]
        return _clips(self.encoder.backbone.stem(x.flatten(0, 1)), batch_size)

    def stage(self, index: int, h: torch.Tensor) -> torch.Tensor:
        return _clips(self.layers[index](_frames(h)), h.shape[0])

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        return self.encoder.projection(h.mean(dim=(2, 3, 4)))


def _frames(h: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W]`` to ``[B * T, C, H, W]``."""
    batch_size, channels, frames, height, width = h.shape
    return h.transpose(1, 2).reshape(batch_size * frames, channels, height, width)


def _clips(h: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``[B * T, C, H, W]`` to ``[B, C, T, H, W]``."""
    frames = h.shape[0] // batch_size
    return h.view(batch_size, frames, *h.shape[1:]).transpose(1, 2)


def staged(encoder: nn.Module, encoder_name: str, fusion_name: str) -> StagedEncoder:
    """Wrap a built encoder so it runs stage by stage, or raise ConfigError for an unsupported one."""
    if isinstance(encoder, ResNet18FramesEncoder):
        return ResNet18FramesStages(encoder)
    if isinstance(encoder, ResNet18Encoder):
        return ResNet18Stages(encoder)
    if isinstance(getattr(encoder, "features", None), nn.Sequential) and hasattr(encoder, "projection"):
        return SequentialCNNStages(encoder)
    raise ConfigError(
        f"fusion {fusion_name!r} runs encoders stage by stage and supports cgmnist-cnn, small-cnn, resnet18 and "
        f"resnet18-frames; this data set's encoder {encoder_name!r} is not supported"
    )


def build_staged_encoders(dataset: MultimodalDataset, embedding_dim: int, fusion_name: str) -> nn.ModuleList:
    """Build the data set's default encoder of every modality, wrapped as ``StagedEncoder``."""
    encoders = []
    for spec in dataset.default_encoders:
        try:
            encoder = ENCODERS.build(spec.name, embedding_dim=embedding_dim, **spec.kwargs)
        except TypeError as error:
            raise ConfigError(f"invalid arguments for encoder {spec.name!r}: {error}") from None
        encoders.append(staged(encoder, spec.name, fusion_name))
    return nn.ModuleList(encoders)


def reject_unknown_params(fusion_name: str, unknown: dict, accepted: str) -> None:
    if unknown:
        raise ConfigError(f"fusion {fusion_name!r} got unknown model.fusion_params {sorted(unknown)}; it accepts {accepted}")


def check_positive_int(fusion_name: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"fusion {fusion_name!r} needs {name} to be a positive integer; got {value!r}")


# -- the module ---------------------------------------------------------------


class MMTM(nn.Module):
    """Squeeze every modality's features, excite each from the joint squeeze.

    Args:
        channels: ``C_m`` of every modality's features at this point.
        reduction: the joint layer has ``max(1, sum(channels) // reduction)`` units.
    """

    def __init__(self, channels: Sequence[int], reduction: int = 4) -> None:
        super().__init__()
        self.channels = tuple(channels)
        joint_dim = max(1, sum(self.channels) // reduction)
        self.joint = nn.Linear(sum(self.channels), joint_dim)
        self.excitations = nn.ModuleList(nn.Linear(joint_dim, c) for c in self.channels)

    def gates(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return each modality's ``[B, C_m]`` channel gates ``2 * sigmoid(E_m)``."""
        squeezed = torch.cat([f.flatten(2).mean(dim=2) for f in features], dim=1)
        joint = torch.relu(self.joint(squeezed))
        return [2.0 * torch.sigmoid(excitation(joint)) for excitation in self.excitations]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.channels):
            raise ValueError(f"got {len(features)} feature maps for an MMTM built for {len(self.channels)} modalities")
        gated = []
        for f, gate in zip(features, self.gates(features)):
            gated.append(f * gate.view(*gate.shape, *([1] * (f.dim() - 2))))
        return gated


class MMTMModel(nn.Module):
    """Staged encoders with an MMTM after each of their last ``mmtm_stages`` stages, then a late fusion head.

    ``encoders[m]`` contains every parameter of modality m's stream; the MMTM
    modules belong to no single modality.
    """

    def __init__(self, encoders: nn.ModuleList, fusion: nn.Module, mmtm_stages: int, reduction: int = 4) -> None:
        super().__init__()
        self.encoders = encoders
        self.fusion = fusion
        num_stages = encoders[0].num_stages
        self.fused_stages = tuple(range(num_stages - mmtm_stages, num_stages))
        self.mmtm = nn.ModuleDict(
            {str(i): MMTM([encoder.stage_channels[i] for encoder in encoders], reduction) for i in self.fused_stages}
        )

    def encode(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.encoders):
            raise ValueError(f"got {len(inputs)} inputs for {len(self.encoders)} encoders")
        features = [encoder.begin(x) for encoder, x in zip(self.encoders, inputs)]
        for index in range(self.encoders[0].num_stages):
            features = [encoder.stage(index, h) for encoder, h in zip(self.encoders, features)]
            if index in self.fused_stages:
                features = self.mmtm[str(index)](features)
        return tuple(encoder.finish(h) for encoder, h in zip(self.encoders, features))

    def forward(self, inputs: Sequence[torch.Tensor]) -> ModelOutput:
        embeddings = self.encode(inputs)
        return ModelOutput(
            logits=self.fusion(embeddings),
            embeddings=embeddings,
            modality_logits=self.fusion.modality_logits(embeddings),
        )


@MODELS.register("mmtm")
def build_mmtm(
    dataset: MultimodalDataset,
    embedding_dim: int,
    reduction: int = 4,
    mmtm_stages: int | None = None,
    head: str = "sum",
    **unknown,
) -> MMTMModel:
    """Build an MMTM model on the data set's default encoders.

    ``mmtm_stages``: number of final stages followed by an MMTM (null: 2 for
    the CG-MNIST and small CNNs, 3 for ResNet18). ``head``: the late fusion
    of the embeddings, a registered fusion without arguments (``sum`` or ``concat``).
    """
    reject_unknown_params("mmtm", unknown, "reduction, mmtm_stages and head")
    check_positive_int("mmtm", "reduction", reduction)
    if dataset.num_modalities < 2:
        raise ConfigError(f"fusion 'mmtm' needs at least two modalities; got {dataset.num_modalities}")
    encoders = build_staged_encoders(dataset, embedding_dim, "mmtm")
    stage_counts = {encoder.num_stages for encoder in encoders}
    if len(stage_counts) != 1:
        raise ConfigError(f"fusion 'mmtm' needs encoders with equally many stages; got {sorted(stage_counts)}")
    num_stages = stage_counts.pop()
    if mmtm_stages is None:
        mmtm_stages = min(encoder.default_mmtm_stages for encoder in encoders)
    check_positive_int("mmtm", "mmtm_stages", mmtm_stages)
    if mmtm_stages > num_stages:
        raise ConfigError(f"fusion 'mmtm' needs mmtm_stages between 1 and {num_stages} (the encoders' stages); got {mmtm_stages}")
    if not isinstance(head, str) or head not in FUSIONS:
        raise ConfigError(f"fusion 'mmtm' needs head to be one of {', '.join(FUSIONS.names())}; got {head!r}")
    fusion = FUSIONS.build(head, [embedding_dim] * dataset.num_modalities, dataset.num_classes)
    return MMTMModel(encoders, fusion, mmtm_stages, reduction)
