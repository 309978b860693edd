"""Encoders that map one modality's input batch to ``[B, embedding_dim]`` embeddings.

The ResNet18 encoders of the audio-visual data sets live in their own module.
"""

from __future__ import annotations

import torch
from torch import nn

from modalbalance.errors import ConfigError
from modalbalance.models.registry import ENCODERS


class CGMNISTEncoder(nn.Module):
    """The small CNN of the CG-MNIST experiments in Fan et al., "PMR", CVPR 2023.

    Four convolutions (5x5-32, max-pool 2, 3x3-32, 3x3-64 with stride 2, 3x3-64),
    a global average pool and a linear layer to ``embedding_dim``. Padding keeps
    the spatial size except at the pool and the strided convolution, so inputs of
    any size from 2x2 up work, 28x28 MNIST and 8x8 scikit-learn digits included.
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int = 512) -> None:
        super().__init__()
        if in_channels < 1 or embedding_dim < 1:
            raise ValueError(f"in_channels and embedding_dim must be positive; got {in_channels} and {embedding_dim}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.projection = nn.Linear(64, embedding_dim)
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim
        # He initialisation, as in standard ResNets. With PyTorch's default
        # (smaller) initialisation this ReLU stack stayed at chance for several
        # epochs at lr 1e-3 on CG-MNIST and on the embedded digits.
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))


@ENCODERS.register("cgmnist-cnn")
def build_cgmnist_encoder(embedding_dim: int = 512, **kwargs) -> CGMNISTEncoder:
    """Build a ``CGMNISTEncoder``. The only accepted keyword is ``in_channels`` (1 for gray, 3 for colored)."""
    unknown = sorted(set(kwargs) - {"in_channels"})
    if unknown:
        raise ConfigError(f"encoder 'cgmnist-cnn' got unknown arguments {unknown}; it accepts embedding_dim and in_channels")
    in_channels = kwargs.get("in_channels", 1)
    for name, value in (("in_channels", in_channels), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"encoder 'cgmnist-cnn' needs {name} to be a positive integer; got {value!r}")
    return CGMNISTEncoder(in_channels=in_channels, embedding_dim=embedding_dim)
