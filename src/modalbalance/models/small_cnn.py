"""A small batch-normalized CNN for spectrograms and small images, fast enough to train on a CPU."""

from __future__ import annotations

import torch
from torch import nn

from modalbalance.errors import ConfigError
from modalbalance.models.registry import ENCODERS


class SmallCNN(nn.Module):
    """Three 3x3 convolution stages on a ``[B, C, H, W]`` log spectrogram or small image.

    The stages have ``width``, 2 x ``width`` and 4 x ``width`` channels. Each stage is conv, batch norm, ReLU and a 2x2 max-pool. The feature maps
    are then average-pooled to a ``pool_size`` x ``pool_size`` grid, flattened
    and projected to ``[B, embedding_dim]``. The grid keeps the coarse
    layout (time and frequency for a spectrogram) that a global average pool
    would discard. Trained
    alone on the audio-visual digits' clips (width 8, Adam at lr 1e-3, three
    epochs), it reached 65% test accuracy where a global pool reached 15%.
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int = 512, width: int = 32, pool_size: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage_width in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(channels, stage_width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(stage_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, ceil_mode=True),
            ]
            channels = stage_width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool_size), nn.Flatten())
        self.projection = nn.Linear(channels * pool_size * pool_size, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"small-cnn expects [B, C, H, W] input; got shape {tuple(x.shape)}")
        return self.projection(self.features(x))


@ENCODERS.register("small-cnn")
def build_small_cnn(embedding_dim: int = 512, **kwargs) -> SmallCNN:
    """Build a ``SmallCNN``; ``kwargs`` may set ``in_channels`` (default 1), ``width`` (32) and ``pool_size`` (4)."""
    unknown = sorted(set(kwargs) - {"in_channels", "width", "pool_size"})
    if unknown:
        raise ConfigError(
            f"encoder 'small-cnn' got unknown arguments {unknown}; it accepts embedding_dim, in_channels, width and pool_size"
        )
    arguments = {
        "in_channels": kwargs.get("in_channels", 1),
        "embedding_dim": embedding_dim,
        "width": kwargs.get("width", 32),
        "pool_size": kwargs.get("pool_size", 4),
    }
    for name, value in arguments.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"encoder 'small-cnn' needs {name} to be a positive integer; got {value!r}")
    return SmallCNN(**arguments)
