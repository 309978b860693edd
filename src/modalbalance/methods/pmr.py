"""PMR as a trainer plug-in: prototypes before each epoch, PCE and PER added to the fused loss.

Prototypes come from one of two sources (``prototype_source``):

- ``subset`` (as in Fan et al., CVPR 2023): before each epoch, an eval-mode pass without
  gradients over a seeded random fraction of the training set;
- ``online``: the class means of the embeddings that the previous epoch's
  training steps computed anyway (train mode, detached), which saves the extra
  pass. Those embeddings come from weights that changed during the epoch, so
  they lag the current weights by up to one epoch. The first epoch has no
  previous epoch and uses the subset pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modalbalance.errors import ConfigError
from modalbalance.methods.base import METHODS, BalancingMethod, TrainingContext
from modalbalance.models.base import ModelOutput
from modalbalance.pmr import PMR, PrototypeAccumulator
from modalbalance.registry import unknown_choice_message
from modalbalance.training import distributed

PROTOTYPE_SOURCES = ("subset", "online")


class PMRMethod(BalancingMethod):
    def __init__(self, context: TrainingContext, pmr: PMR, prototype_source: str = "subset") -> None:
        super().__init__(context)
        if not isinstance(prototype_source, str) or prototype_source not in PROTOTYPE_SOURCES:
            raise ConfigError(unknown_choice_message("method.prototype_source", prototype_source, list(PROTOTYPE_SOURCES)))
        self.pmr = pmr
        self.prototype_source = prototype_source
        # Class sums of the current epoch's training embeddings, for the next epoch's online prototypes.
        self.online_accumulator: PrototypeAccumulator | None = None
        if distributed.is_distributed():
            self.pmr.score_reducer = distributed.all_reduce_sum

    def on_epoch_start(self, epoch: int) -> None:
        if self.prototype_source == "online" and self.online_accumulator is not None:
            self.pmr.bank.update(self.online_accumulator)
        else:
            self.pmr.bank.update(self.context.prototype_accumulator(epoch))
        if self.prototype_source == "online":
            self.online_accumulator = self.pmr.bank.new_accumulator()

    def on_epoch_end(self, epoch: int) -> None:
        # Sum over processes now rather than at the next epoch's start, so that
        # the checkpoint written after this epoch contains the totals of all processes.
        if self.online_accumulator is not None:
            distributed.all_reduce_accumulator(self.online_accumulator)

    def compute_loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.online_accumulator is not None:
            self.online_accumulator.add(output.embeddings, labels)
        terms = self.pmr.loss(output.embeddings, labels, epoch)
        loss = F.cross_entropy(output.logits, labels) + terms.loss
        logs = {"imbalance_ratio": terms.imbalance_ratio}
        for name, weight, entropy_weight in zip(self.context.modality_names, terms.acceleration_weights.tolist(), terms.entropy_weights.tolist()):
            logs[f"acceleration_weight/{name}"] = weight
            logs[f"entropy_weight/{name}"] = entropy_weight
        for name, value in zip(self.context.modality_names, terms.cross_entropy.tolist()):
            logs[f"pce/{name}"] = value
        return loss, logs

    def state_dict(self) -> dict:
        state = {"bank": self.pmr.bank.state_dict()}
        if self.online_accumulator is not None:
            state["online_accumulator"] = {"sums": self.online_accumulator.sums, "counts": self.online_accumulator.counts}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.pmr.bank.load_state_dict(state["bank"])
        online = state.get("online_accumulator")
        if online is not None:
            accumulator = self.pmr.bank.new_accumulator()
            device = self.context.device
            accumulator.sums = [None if sums is None else sums.to(device) for sums in online["sums"]]
            accumulator.counts = online["counts"].clone()
            self.online_accumulator = accumulator


def _build(
    context: TrainingContext,
    use_per: bool,
    alpha: float = 1.0,
    mu: float = 0.01,
    coefficient_rule: str = "paper",
    prototype_momentum: float = 0.0,
    per_epochs: int | None = None,
    modulation_start: int = 0,
    modulation_end: int | None = None,
    prototype_source: str = "subset",
) -> PMRMethod:
    if per_epochs is None:
        # The paper leaves E_r open; 10% of the epochs, rounded up, is our default.
        per_epochs = max(1, math.ceil(0.1 * context.epochs))
    pmr = PMR(
        num_classes=context.num_classes,
        num_modalities=context.num_modalities,
        alpha=alpha,
        mu=mu,
        coefficient_rule=coefficient_rule,
        prototype_momentum=prototype_momentum,
        per_epochs=per_epochs,
        use_per=use_per,
        modulation_start=modulation_start,
        modulation_end=modulation_end,
        class_names=context.train_set.class_names,
    )
    return PMRMethod(context, pmr, prototype_source)


@METHODS.register("pmr")
def build_pmr(
    context: TrainingContext,
    alpha: float = 1.0,
    mu: float = 0.01,
    coefficient_rule: str = "paper",
    prototype_momentum: float = 0.0,
    per_epochs: int | None = None,
    modulation_start: int = 0,
    modulation_end: int | None = None,
    prototype_source: str = "subset",
) -> PMRMethod:
    """PMR with the prototypical entropy regularizer on for the first ``per_epochs`` epochs."""
    return _build(context, True, alpha, mu, coefficient_rule, prototype_momentum, per_epochs, modulation_start, modulation_end, prototype_source)


@METHODS.register("pmr-no-per")
def build_pmr_without_per(
    context: TrainingContext,
    alpha: float = 1.0,
    coefficient_rule: str = "paper",
    prototype_momentum: float = 0.0,
    modulation_start: int = 0,
    modulation_end: int | None = None,
    prototype_source: str = "subset",
) -> PMRMethod:
    """PMR with prototypical cross-entropy only (the "PMR without PER" row of the paper's Table 2)."""
    return _build(context, False, alpha, 0.0, coefficient_rule, prototype_momentum, 0, modulation_start, modulation_end, prototype_source)
