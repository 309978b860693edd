"""ResNet18 encoders for the audio-visual data sets.

The network is the 18-layer residual network of He, Zhang, Ren and Sun, "Deep
Residual Learning for Image Recognition", CVPR 2016, without its
classification head. It has a 7x7 stride-2 stem with max-pooling, four stages
of two basic blocks (64, 128, 256 and 512 channels) and global average
pooling. PMR trains it from scratch on log spectrograms (1 channel) and on
video frames (3 channels).
"""

from __future__ import annotations

import torch
from torch import nn

from modalbalance.errors import ConfigError
from modalbalance.models.registry import ENCODERS

RESNET18_WIDTH = 512


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

        # The shortcut must match the residual's shape when the block changes resolution or width.
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.relu(self.bn1(self.conv1(x)))
        residual = self.bn2(self.conv2(residual))
        return self.relu(residual + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 without its classification head: ``[B, C, H, W]`` to a ``[B, 512]`` embedding.

    ``forward_features`` returns the last stage's ``[B, 512, H/32, W/32]`` feature
    maps (rounded up), for callers that pool differently.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.layer1 = self._make_layer(64, 64, stride=1)
        self.layer2 = self._make_layer(64, 128, stride=2)
        self.layer3 = self._make_layer(128, 256, stride=2)
        self.layer4 = self._make_layer(256, RESNET18_WIDTH, stride=2)
        self._init_weights()

    @staticmethod
    def _make_layer(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_channels, out_channels, stride=stride),
            BasicBlock(out_channels, out_channels, stride=1),
        )

    def _init_weights(self) -> None:
        # Kaiming-normal init for ReLU networks (He et al., ICCV 2015), fan-out mode as in the ResNet paper.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


class ResNet18Encoder(nn.Module):
    """ResNet18 on one image per sample (``[B, C, H, W]``), such as a 1-channel log spectrogram.

    A linear projection maps the 512-d pooled features to ``embedding_dim`` when
    the two differ; at 512 the embedding is the pooled feature itself.
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int = RESNET18_WIDTH) -> None:
        super().__init__()
        self.backbone = ResNet18(in_channels)
        self.projection = _projection(embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"resnet18 expects [B, C, H, W] input; got shape {tuple(x.shape)}")
        return self.projection(self.backbone(x))


class ResNet18FramesEncoder(nn.Module):
    """ResNet18 shared across the frames of a clip (``[B, T, C, H, W]``).

    Every frame goes through the same 2-D network; the ``[B, T, 512, h, w]``
    feature maps are then averaged over time and space, as PMR does for video.
    """

    def __init__(self, in_channels: int = 3, embedding_dim: int = RESNET18_WIDTH) -> None:
        super().__init__()
        self.backbone = ResNet18(in_channels)
        self.projection = _projection(embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"resnet18-frames expects [B, T, C, H, W] input; got shape {tuple(x.shape)}")
        batch_size, num_frames = x.shape[:2]
        features = self.backbone.forward_features(x.flatten(0, 1))
        features = features.view(batch_size, num_frames, *features.shape[1:])
        return self.projection(features.mean(dim=(1, 3, 4)))


def _projection(embedding_dim: int) -> nn.Module:
    if embedding_dim == RESNET18_WIDTH:
        return nn.Identity()
    return nn.Linear(RESNET18_WIDTH, embedding_dim)


def _checked_arguments(encoder_name: str, embedding_dim: int, kwargs: dict, default_channels: int) -> tuple[int, int]:
    """Return ``(in_channels, embedding_dim)`` or raise ConfigError naming the invalid argument."""
    unknown = sorted(set(kwargs) - {"in_channels"})
    if unknown:
        raise ConfigError(f"encoder {encoder_name!r} got unknown arguments {unknown}; it accepts embedding_dim and in_channels")
    in_channels = kwargs.get("in_channels", default_channels)
    for name, value in (("in_channels", in_channels), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"encoder {encoder_name!r} needs {name} to be a positive integer; got {value!r}")
    return in_channels, embedding_dim


@ENCODERS.register("resnet18")
def build_resnet18(embedding_dim: int = RESNET18_WIDTH, **kwargs) -> ResNet18Encoder:
    """Build a ResNet18 for ``[B, C, H, W]`` input; ``kwargs`` may set ``in_channels`` (default 1)."""
    in_channels, embedding_dim = _checked_arguments("resnet18", embedding_dim, kwargs, default_channels=1)
    return ResNet18Encoder(in_channels=in_channels, embedding_dim=embedding_dim)


@ENCODERS.register("resnet18-frames")
def build_resnet18_frames(embedding_dim: int = RESNET18_WIDTH, **kwargs) -> ResNet18FramesEncoder:
    """Build a frame-shared ResNet18 for ``[B, T, C, H, W]`` input; ``kwargs`` may set ``in_channels`` (default 3)."""
    in_channels, embedding_dim = _checked_arguments("resnet18-frames", embedding_dim, kwargs, default_channels=3)
    return ResNet18FramesEncoder(in_channels=in_channels, embedding_dim=embedding_dim)
