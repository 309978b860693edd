"""Prototypical Modal Rebalance (PMR), usable with any model that returns one embedding per modality.

Fan, Xu, Wang, Wang and Guo, "PMR: Prototypical Modal Rebalance for
Multimodal Learning", CVPR 2023. Symbols of the paper and their names here:

- ``c_k^m`` prototype of class k in modality m: ``PrototypeBank.prototypes[m][k]``
- ``p^m(y | x)`` prototype distribution: ``softmax(prototype_logits(z, c))``
- ``s^m`` modality score, ``rho = s^0 / s^1``: ``modality_scores``, ``imbalance_ratio``
- ``beta``, ``gamma`` acceleration coefficients: ``acceleration_weights``
- ``L_PCE`` prototypical cross-entropy (Eq. 9): ``prototypical_cross_entropy``
- ``H`` prototype entropy for the regularizer (Eq. 13): ``prototype_entropy``

Typical use, next to the usual cross-entropy on the fused logits::

    pmr = PMR(num_classes=10, num_modalities=2, alpha=1.0, mu=0.01)
    for epoch in range(epochs):
        pmr.update_prototypes(subset_batches, embed_fn, module=model)
        for inputs, labels in train_batches:
            logits, embeddings = model(inputs)
            terms = pmr.loss(embeddings, labels, epoch)
            loss = F.cross_entropy(logits, labels) + terms.loss
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.errors import ConfigError, DataError

COEFFICIENT_RULES = ("paper", "official-code")

# Squared distances are clamped at this value before the square root, because
# d sqrt(x) / dx is infinite at x = 0 (an embedding equal to its prototype).
_MIN_SQUARED_DISTANCE = 1e-12


def prototype_distances(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Compute Euclidean (not squared) distances ``[B, K]`` from ``[B, D]`` embeddings to ``[K, D]`` prototypes.

    The gradient stays finite when an embedding coincides with a prototype.
    """
    # |z - c|^2 = |z|^2 + |c|^2 - 2 z.c needs one matrix product instead of a
    # [B, K, D] tensor of differences, which cost about 4% of a CG-MNIST training
    # step on a CPU (batch 64, D = 512, K = 10). Centering both sides on the
    # prototypes' mean first keeps the float32 cancellation error small.
    center = prototypes.mean(dim=0, keepdim=True)
    centered_embeddings = embeddings - center
    centered_prototypes = prototypes - center
    squared = (
        centered_embeddings.pow(2).sum(dim=1, keepdim=True)
        + centered_prototypes.pow(2).sum(dim=1).unsqueeze(0)
        - 2.0 * centered_embeddings @ centered_prototypes.T
    )
    return squared.clamp_min(_MIN_SQUARED_DISTANCE).sqrt()


def prototype_logits(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Return ``-d(z, c_k)``, whose softmax over classes is the prototype distribution ``p(y = k | x)``."""
    return -prototype_distances(embeddings, prototypes)


def modality_scores(logits_per_modality: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Sum each modality's true-class prototype probability over the batch: ``s^m``, shape ``[M]``, detached."""
    scores = []
    for logits in logits_per_modality:
        probabilities = logits.detach().softmax(dim=1)
        scores.append(probabilities.gather(1, labels.view(-1, 1)).sum())
    return torch.stack(scores)


def imbalance_ratio(scores: torch.Tensor) -> float:
    """Return ``rho = s^0 / s^1`` for two modalities; below 1 means modality 0 is the slow one."""
    if scores.numel() != 2:
        raise ValueError(f"the imbalance ratio is defined for two modalities; got {scores.numel()} scores")
    return float(scores[0] / scores[1])


def acceleration_weights(scores: torch.Tensor, rule: str = "paper") -> torch.Tensor:
    """Compute each modality's PCE weight (``beta``, ``gamma`` for two modalities) from its score.

    ``paper`` (Eq. 11, generalised to M modalities): ``clip(s_max / s^m - 1, 0, 1)``,
    so the best modality gets 0 and a modality far behind gets up to 1.
    ``official-code``: 1 for every modality scoring below the best one, else 0,
    which is the binary rule of the authors' public scripts (both 0 when the
    scores tie). The loss multiplies these weights by ``alpha``.
    """
    scores = scores.detach().double()
    best = scores.max()
    if rule == "paper":
        ratios = best / scores.clamp_min(torch.finfo(torch.float64).tiny)
        return (ratios - 1.0).clamp(0.0, 1.0).float()
    if rule == "official-code":
        return (scores < best).float()
    raise ConfigError(f"coefficient_rule must be one of {', '.join(COEFFICIENT_RULES)}; got {rule!r}")


def entropy_weights(acceleration: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Compute each modality's PER weight: the best-scoring modality gets the largest acceleration weight of the others.

    For two modalities this is the crossing of Eq. 13: the dominant modality's
    entropy is weighted by the slow modality's acceleration coefficient.
    """
    weights = torch.zeros_like(acceleration)
    best = int(torch.argmax(scores))
    others = torch.cat([acceleration[:best], acceleration[best + 1 :]])
    if others.numel() > 0:
        weights[best] = others.max()
    return weights


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prototypical_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return the mean of ``-log p(y_i | x_i)`` under the prototype distribution (Eq. 9)."""
    return F.cross_entropy(logits, labels)


def prototype_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Return the mean entropy (natural log) of the prototype distribution over all classes."""
    log_probabilities = logits.log_softmax(dim=1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=1).mean()


class PrototypeAccumulator:
    """Per-class embedding sums and counts for one pass over a prototype subset.

    Sums and counts (not means) are kept so that several processes can add
    theirs together before the means are taken.
    """

    def __init__(self, num_modalities: int, num_classes: int) -> None:
        self.num_classes = num_classes
        self.sums: list[torch.Tensor | None] = [None] * num_modalities
        self.counts = torch.zeros(num_classes, dtype=torch.float64)

    @torch.no_grad()
    def add(self, embeddings: Sequence[torch.Tensor], labels: torch.Tensor) -> None:
        if len(embeddings) != len(self.sums):
            raise ValueError(f"got {len(embeddings)} embeddings for {len(self.sums)} modalities")
        labels = labels.to(torch.long)
        for m, embedding in enumerate(embeddings):
            embedding = embedding.detach().to(torch.float64)
            if self.sums[m] is None:
                self.sums[m] = torch.zeros(self.num_classes, embedding.shape[1], dtype=torch.float64, device=embedding.device)
            self.sums[m].index_add_(0, labels.to(embedding.device), embedding)
        self.counts += torch.bincount(labels.cpu(), minlength=self.num_classes).to(torch.float64)


class PrototypeBank:
    """Class prototypes of every modality, updated between epochs with momentum.

    ``c <- momentum * c_old + (1 - momentum) * c_new``. A class with no sample
    in a pass keeps its previous prototype. If it has none yet, ``update``
    raises ``DataError`` naming the class, because a 0/0 mean would be NaN.
    """

    def __init__(
        self,
        num_modalities: int,
        num_classes: int,
        momentum: float = 0.0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not (_is_number(momentum) and 0.0 <= momentum < 1.0):
            raise ConfigError(f"prototype momentum must be a number in [0, 1); got {momentum!r}")
        self.num_modalities = num_modalities
        self.num_classes = num_classes
        self.momentum = momentum
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(k) for k in range(num_classes))
        self.prototypes: list[torch.Tensor | None] = [None] * num_modalities
        self.has_prototype = torch.zeros(num_classes, dtype=torch.bool)

    @property
    def ready(self) -> bool:
        return all(p is not None for p in self.prototypes)

    def new_accumulator(self) -> PrototypeAccumulator:
        return PrototypeAccumulator(self.num_modalities, self.num_classes)

    @torch.no_grad()
    def update(self, accumulator: PrototypeAccumulator) -> None:
        """Fold one pass's class means into the prototypes.

        Raises DataError for a class that has never had a sample and for
        non-finite embedding sums, which NaN or infinite inputs produce.
        """
        present = accumulator.counts > 0
        never_seen = ~present & ~self.has_prototype
        if never_seen.any():
            names = [self.class_names[k] for k in torch.nonzero(never_seen).flatten().tolist()]
            subject = f"class {names[0]!r} has" if len(names) == 1 else f"classes {', '.join(repr(n) for n in names)} have"
            raise DataError(
                f"{subject} no sample in the prototype subset and no earlier "
                "prototype; draw a larger prototype subset or top it up with samples of that class"
            )
        for m, sums in enumerate(accumulator.sums):
            if sums is None:
                raise DataError("the prototype subset is empty; draw a larger prototype subset")
            finite = torch.isfinite(sums).all(dim=1).cpu()
            if not finite.all():
                name = self.class_names[int(torch.nonzero(~finite)[0])]
                raise DataError(
                    f"non-finite embedding in modality {m} for class {name!r} during the prototype pass; "
                    "check the inputs for NaN or infinite values"
                )
            counts = accumulator.counts.to(sums.device).clamp_min(1.0).unsqueeze(1)
            new = (sums / counts).to(torch.float32)
            old = self.prototypes[m]
            if old is None:
                merged = new
            else:
                merged = self.momentum * old.to(new.device) + (1.0 - self.momentum) * new
                # A class absent from this pass keeps its previous prototype.
                merged = torch.where(present.to(new.device).unsqueeze(1), merged, old.to(new.device))
            self.prototypes[m] = merged
        self.has_prototype |= present

    @torch.no_grad()
    def compute(
        self,
        batches: Iterable[tuple[Sequence[torch.Tensor], torch.Tensor]],
        embed: Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]],
        module: nn.Module | None = None,
    ) -> PrototypeAccumulator:
        """Embed every ``(inputs, labels)`` batch without gradients (``module`` in eval mode) and update the bank."""
        accumulator = self.accumulate(batches, embed, module)
        self.update(accumulator)
        return accumulator

    @torch.no_grad()
    def accumulate(
        self,
        batches: Iterable[tuple[Sequence[torch.Tensor], torch.Tensor]],
        embed: Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]],
        module: nn.Module | None = None,
    ) -> PrototypeAccumulator:
        """Return the class sums and counts of every batch's embeddings, without updating the bank.

        Processes of a distributed run each accumulate their own batches, add
        the accumulators together and then call ``update`` with the total.
        """
        accumulator = self.new_accumulator()
        was_training = module.training if module is not None else False
        if module is not None:
            module.eval()
        try:
            for inputs, labels in batches:
                accumulator.add(embed(inputs), labels)
        finally:
            if module is not None:
                module.train(was_training)
        return accumulator

    def logits(self, embeddings: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return each modality's prototype logits ``[B, K]``."""
        if not self.ready:
            raise RuntimeError("prototypes are not computed yet; call PMR.update_prototypes() (or PrototypeBank.compute()) before the first epoch")
        return [prototype_logits(z, c.to(z.device, z.dtype)) for z, c in zip(embeddings, self.prototypes)]

    def state_dict(self) -> dict:
        return {"prototypes": [p.clone() if p is not None else None for p in self.prototypes], "has_prototype": self.has_prototype.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.prototypes = [p.clone() if p is not None else None for p in state["prototypes"]]
        self.has_prototype = state["has_prototype"].clone()


@dataclass
class PMRTerms:
    """PMR's contribution to one training step; ``loss`` is added to the fused cross-entropy."""

    loss: torch.Tensor
    scores: torch.Tensor
    acceleration_weights: torch.Tensor
    entropy_weights: torch.Tensor
    cross_entropy: torch.Tensor
    entropy: torch.Tensor
    prototype_logits: list[torch.Tensor]

    @property
    def imbalance_ratio(self) -> float:
        """``s^0 / s^1`` for two modalities; for more, the worst score over the best."""
        if self.scores.numel() == 2:
            return imbalance_ratio(self.scores)
        return float(self.scores.min() / self.scores.max())


class PMR:
    """The PMR loss with its schedule, for M >= 2 modalities.

    Args:
        num_classes: number of classes K.
        num_modalities: number of modalities M.
        alpha: scale of the prototypical cross-entropy (paper: 1 or 2).
        mu: scale of the prototypical entropy regularizer (paper: 1e-2 or 1e-3).
        coefficient_rule: ``"paper"`` (clipped, Eq. 11) or ``"official-code"`` (binary).
        prototype_momentum: ``eps`` of the prototype update; 0 keeps only the newest means.
        per_epochs: the regularizer is on for epochs ``0 .. per_epochs - 1`` (``E_r``).
        use_per: False gives "PMR without PER".
        modulation_start, modulation_end: PCE and PER act only in epochs
            ``modulation_start .. modulation_end`` (inclusive); None means no end.
        class_names: used in error messages about missing classes.

    Attributes:
        score_reducer: None, or a function that maps this process's batch
            scores ``s^m`` to their sum over all processes of a distributed
            run (such as an all-reduce), applied before the imbalance ratio
            and the coefficients are computed. Every process then weights its
            losses by the scores of the whole global batch.
    """

    def __init__(
        self,
        num_classes: int,
        num_modalities: int = 2,
        alpha: float = 1.0,
        mu: float = 0.01,
        coefficient_rule: str = "paper",
        prototype_momentum: float = 0.0,
        per_epochs: int = 10,
        use_per: bool = True,
        modulation_start: int = 0,
        modulation_end: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if num_modalities < 2:
            raise ConfigError(f"PMR needs at least two modalities; got {num_modalities}")
        if not (_is_number(alpha) and alpha >= 0 and math.isfinite(alpha)):
            raise ConfigError(f"alpha must be a finite number >= 0; got {alpha!r}")
        if not (_is_number(mu) and mu >= 0 and math.isfinite(mu)):
            raise ConfigError(f"mu must be a finite number >= 0; got {mu!r}")
        if not _is_number(prototype_momentum):
            raise ConfigError(f"prototype_momentum must be a number in [0, 1); got {prototype_momentum!r}")
        if not isinstance(coefficient_rule, str) or coefficient_rule not in COEFFICIENT_RULES:
            raise ConfigError(f"coefficient_rule must be one of {', '.join(COEFFICIENT_RULES)}; got {coefficient_rule!r}")
        if not isinstance(use_per, bool):
            raise ConfigError(f"use_per must be true or false; got {use_per!r}")
        for name, value in (("per_epochs", per_epochs), ("modulation_start", modulation_start), ("modulation_end", modulation_end)):
            if value is not None and not _is_integer(value):
                raise ConfigError(f"{name} must be an integer; got {value!r}")
        if per_epochs is None or per_epochs < 0:
            raise ConfigError(f"per_epochs must be >= 0; got {per_epochs!r}")
        if modulation_start is None or modulation_start < 0 or (modulation_end is not None and modulation_end < modulation_start):
            raise ConfigError(
                f"the modulation window must satisfy 0 <= modulation_start <= modulation_end; got {modulation_start}..{modulation_end}"
            )
        self.num_classes = num_classes
        self.num_modalities = num_modalities
        self.alpha = float(alpha)
        self.mu = float(mu)
        self.coefficient_rule = coefficient_rule
        self.per_epochs = int(per_epochs)
        self.use_per = use_per
        self.modulation_start = modulation_start
        self.modulation_end = modulation_end
        self.bank = PrototypeBank(num_modalities, num_classes, prototype_momentum, class_names)
        self.score_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None

    def in_window(self, epoch: int) -> bool:
        """Return whether PCE (and PER) act in this 0-based epoch."""
        return epoch >= self.modulation_start and (self.modulation_end is None or epoch <= self.modulation_end)

    def per_active(self, epoch: int) -> bool:
        return self.use_per and self.in_window(epoch) and epoch < self.per_epochs

    def update_prototypes(
        self,
        batches: Iterable[tuple[Sequence[torch.Tensor], torch.Tensor]],
        embed: Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor]],
        module: nn.Module | None = None,
    ) -> None:
        """Recompute the prototypes from training-subset batches; call before each epoch."""
        self.bank.compute(batches, embed, module)

    def loss(self, embeddings: Sequence[torch.Tensor], labels: torch.Tensor, epoch: int) -> PMRTerms:
        """Compute ``alpha * sum_m w_m * L_PCE^m - mu * sum_m v_m * H^m`` for one batch.

        ``w`` are the acceleration weights and ``v`` the entropy weights. Outside
        the modulation window the loss is zero, but scores and weights are still
        returned so that the imbalance can be logged every step.
        """
        if len(embeddings) != self.num_modalities:
            raise ValueError(f"got {len(embeddings)} embeddings for {self.num_modalities} modalities")
        logits = self.bank.logits(embeddings)
        scores = modality_scores(logits, labels)
        if self.score_reducer is not None:
            scores = self.score_reducer(scores)
        acceleration = acceleration_weights(scores, self.coefficient_rule)
        entropy_weight = entropy_weights(acceleration, scores)
        cross_entropy = torch.stack([prototypical_cross_entropy(z, labels) for z in logits])
        entropy = torch.stack([prototype_entropy(z) for z in logits])

        device = cross_entropy.device
        total = cross_entropy.new_zeros(())
        if self.in_window(epoch):
            total = total + self.alpha * (acceleration.to(device) * cross_entropy).sum()
        if self.per_active(epoch):
            total = total - self.mu * (entropy_weight.to(device) * entropy).sum()
        return PMRTerms(
            loss=total,
            scores=scores,
            acceleration_weights=acceleration,
            entropy_weights=entropy_weight,
            cross_entropy=cross_entropy.detach(),
            entropy=entropy.detach(),
            prototype_logits=logits,
        )
