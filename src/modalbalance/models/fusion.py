"""Fusion heads that map per-modality embeddings to class logits.

Late fusions (``concat``, ``sum``) are linear in each embedding, so their logits
split exactly into one part per modality (``modality_logits``). Intermediate
fusions (``film``, ``gated``) mix the embeddings before the classifier and do
not split, so ``modality_logits`` returns None for them. These are the four
fusions of Table 1 in Fan et al., "PMR: Prototypical Modal Rebalance for
Multimodal Learning", CVPR 2023.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from modalbalance.errors import ConfigError
from modalbalance.models.base import Fusion
from modalbalance.models.registry import FUSIONS


def _check_dims(fusion_name: str, embedding_dims: Sequence[int], num_classes: int) -> tuple[int, ...]:
    dims = tuple(embedding_dims)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ConfigError(f"fusion {fusion_name!r} needs one positive embedding dim per modality; got {list(dims)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"fusion {fusion_name!r} needs num_classes to be a positive integer; got {num_classes!r}")
    return dims


def _check_two_modalities(fusion_name: str, dims: tuple[int, ...], index_name: str, index: int) -> None:
    if len(dims) != 2:
        raise ConfigError(
            f"fusion {fusion_name!r} needs exactly two modalities; got {len(dims)} (embedding dims {list(dims)}); "
            "use concat or sum for other counts"
        )
    if index not in (0, 1):
        raise ConfigError(f"fusion {fusion_name!r} needs {index_name} to be 0 or 1 (a modality index); got {index!r}")


def _check_count(embeddings: Sequence[torch.Tensor], expected: int) -> None:
    if len(embeddings) != expected:
        raise ValueError(f"got {len(embeddings)} embeddings for a fusion built for {expected} modalities")


def _reject_unknown_kwargs(fusion_name: str, unknown: dict, accepted: str) -> None:
    if unknown:
        raise ConfigError(f"fusion {fusion_name!r} got unknown arguments {sorted(unknown)}; it accepts {accepted}")


class ConcatFusion(Fusion):
    """One linear classifier over the concatenated embeddings.

    ``W [z^0; z^1; ...] + b = sum_m (W^m z^m + b / M)``, where ``W^m`` are the
    columns of ``W`` that multiply modality m. ``modality_logits`` returns those
    terms, so they sum to the fused logits up to rounding.
    """

    def __init__(self, embedding_dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.embedding_dims = _check_dims("concat", embedding_dims, num_classes)
        self.classifier = nn.Linear(sum(self.embedding_dims), num_classes)

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_count(embeddings, len(self.embedding_dims))
        return self.classifier(torch.cat(tuple(embeddings), dim=1))

    def modality_logits(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        _check_count(embeddings, len(self.embedding_dims))
        weights = torch.split(self.classifier.weight, self.embedding_dims, dim=1)
        bias_share = self.classifier.bias / len(self.embedding_dims)
        return tuple(z @ weight.T + bias_share for z, weight in zip(embeddings, weights))


class SumFusion(Fusion):
    """One linear classifier per modality, with the logits summed."""

    def __init__(self, embedding_dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.embedding_dims = _check_dims("sum", embedding_dims, num_classes)
        self.classifiers = nn.ModuleList(nn.Linear(dim, num_classes) for dim in self.embedding_dims)

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(self.modality_logits(embeddings)).sum(dim=0)

    def modality_logits(self, embeddings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        _check_count(embeddings, len(self.embedding_dims))
        return tuple(classifier(z) for classifier, z in zip(self.classifiers, embeddings))


class FiLMFusion(Fusion):
    """Feature-wise linear modulation (Perez et al., AAAI 2018) of one embedding by the other.

    The conditioning modality ``condition_on`` maps to ``(gamma, beta)`` by one
    linear layer, and the other modality's embedding ``x`` becomes
    ``gamma * x + beta`` before the linear classifier.
    """

    def __init__(self, embedding_dims: Sequence[int], num_classes: int, condition_on: int = 1) -> None:
        super().__init__()
        dims = _check_dims("film", embedding_dims, num_classes)
        _check_two_modalities("film", dims, "condition_on", condition_on)
        self.embedding_dims = dims
        self.condition_on = condition_on
        self.modulated = 1 - condition_on
        modulated_dim = dims[self.modulated]
        self.film_generator = nn.Linear(dims[condition_on], 2 * modulated_dim)
        self.classifier = nn.Linear(modulated_dim, num_classes)

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_count(embeddings, 2)
        gamma, beta = self.film_generator(embeddings[self.condition_on]).chunk(2, dim=1)
        return self.classifier(gamma * embeddings[self.modulated] + beta)


class GatedFusion(Fusion):
    """Multiplicative gating (Kiela et al., AAAI 2018) of one modality's projection by the other's.

    Both embeddings are projected to ``hidden_dim`` by their own linear layer.
    The projection of modality ``gate`` goes through a sigmoid and multiplies
    the other projection element-wise before the linear classifier.
    """

    def __init__(self, embedding_dims: Sequence[int], num_classes: int, gate: int = 1, hidden_dim: int = 512) -> None:
        super().__init__()
        dims = _check_dims("gated", embedding_dims, num_classes)
        _check_two_modalities("gated", dims, "gate", gate)
        if isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ConfigError(f"fusion 'gated' needs hidden_dim to be a positive integer; got {hidden_dim!r}")
        self.embedding_dims = dims
        self.gate = gate
        self.gated = 1 - gate
        self.gate_projection = nn.Linear(dims[gate], hidden_dim)
        self.gated_projection = nn.Linear(dims[self.gated], hidden_dim)
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def forward(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_count(embeddings, 2)
        gate = torch.sigmoid(self.gate_projection(embeddings[self.gate]))
        return self.classifier(gate * self.gated_projection(embeddings[self.gated]))


@FUSIONS.register("concat")
def build_concat(embedding_dims: Sequence[int], num_classes: int, **kwargs) -> ConcatFusion:
    _reject_unknown_kwargs("concat", kwargs, "no arguments")
    return ConcatFusion(embedding_dims, num_classes)


@FUSIONS.register("sum")
def build_sum(embedding_dims: Sequence[int], num_classes: int, **kwargs) -> SumFusion:
    _reject_unknown_kwargs("sum", kwargs, "no arguments")
    return SumFusion(embedding_dims, num_classes)


@FUSIONS.register("film")
def build_film(embedding_dims: Sequence[int], num_classes: int, condition_on: int = 1, **kwargs) -> FiLMFusion:
    _reject_unknown_kwargs("film", kwargs, "condition_on")
    return FiLMFusion(embedding_dims, num_classes, condition_on=condition_on)


@FUSIONS.register("gated")
def build_gated(
    embedding_dims: Sequence[int], num_classes: int, gate: int = 1, hidden_dim: int = 512, **kwargs
) -> GatedFusion:
    _reject_unknown_kwargs("gated", kwargs, "gate and hidden_dim")
    return GatedFusion(embedding_dims, num_classes, gate=gate, hidden_dim=hidden_dim)
