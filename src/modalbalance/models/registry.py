"""Encoder, fusion and model registries.

- ``ENCODERS``: ``build(embedding_dim=512, **kwargs) -> nn.Module`` mapping one
  modality's input batch to ``[B, embedding_dim]``.
- ``FUSIONS``: ``build(embedding_dims: Sequence[int], num_classes: int, **kwargs) -> Fusion``.
- ``MODELS``: whole-model builders for fusions that live inside the encoders
  (MMTM, CentralNet): ``build(dataset, embedding_dim, **kwargs) -> nn.Module``
  returning ``ModelOutput``.
"""

from torch import nn

from modalbalance.models.base import Fusion
from modalbalance.registry import Registry

ENCODERS: Registry[nn.Module] = Registry("encoder")
FUSIONS: Registry[Fusion] = Registry("fusion")
MODELS: Registry[nn.Module] = Registry("model")
