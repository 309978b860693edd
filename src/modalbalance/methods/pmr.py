"""PMR as a trainer plug-in: prototypes before each epoch, PCE and PER added to the fused loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modalbalance.methods.base import METHODS, BalancingMethod, TrainingContext
from modalbalance.models.base import ModelOutput
from modalbalance.pmr import PMR


class PMRMethod(BalancingMethod):
    def __init__(self, context: TrainingContext, pmr: PMR) -> None:
        super().__init__(context)
        self.pmr = pmr

    def on_epoch_start(self, epoch: int) -> None:
        self.pmr.bank.update(self.context.prototype_accumulator(epoch))

    def compute_loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
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
        return {"bank": self.pmr.bank.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.pmr.bank.load_state_dict(state["bank"])


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
    return PMRMethod(context, pmr)


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
) -> PMRMethod:
    """PMR with the prototypical entropy regularizer on for the first ``per_epochs`` epochs."""
    return _build(context, True, alpha, mu, coefficient_rule, prototype_momentum, per_epochs, modulation_start, modulation_end)


@METHODS.register("pmr-no-per")
def build_pmr_without_per(
    context: TrainingContext,
    alpha: float = 1.0,
    coefficient_rule: str = "paper",
    prototype_momentum: float = 0.0,
    modulation_start: int = 0,
    modulation_end: int | None = None,
) -> PMRMethod:
    """PMR with prototypical cross-entropy only (the "PMR without PER" row of the paper's Table 2)."""
    return _build(context, False, alpha, 0.0, coefficient_rule, prototype_momentum, 0, modulation_start, modulation_end)
