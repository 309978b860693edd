"""Gradient-Blending: weighted losses of the fused head and per-modality auxiliary heads.

Wang, Tran and Feiszli, "What Makes Training Multi-Modal Classification
Networks Hard?", CVPR 2020, in its online form (weights re-estimated during
training). Branch 0 is the model's fused head; branch ``1 + m`` is a linear
auxiliary head on modality m's embedding. The loss of a step is

    L = sum_k w_k * CE(logits_k, y)

For the weights, a seeded ``holdout_fraction`` of the TRAINING set is held
out of training (never the test set). Every ``update_every`` epochs, before
the epoch, each branch's mean cross-entropy is measured in eval mode on the
held-out samples (``V``) and on an equally large fixed sample of the
remaining training samples (``T``). Between the previous measurement and
this one:

- generalization gain ``G_k = V_k(before) - V_k(now)``;
- change of overfitting ``O_k = (V_k(now) - T_k(now)) - (V_k(before) - T_k(before))``;
- ``w_k = max(G_k, 0) / max(O_k^2, 1e-12)``, normalized to sum to 1. The
  overfitting-to-generalization ratio (OGR) of branch k is ``O_k / G_k``.

Before the first estimate every branch has weight ``1 / (M + 1)``. If no
branch improved on the held-out set (every ``G_k <= 0``), the previous
weights stay.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.errors import ConfigError
from modalbalance.methods.base import METHODS, BalancingMethod, TrainingContext
from modalbalance.methods.ogm_ge import probe_output, step_seed
from modalbalance.models.base import ModelOutput
from modalbalance.training.data import BatchLoader

logger = logging.getLogger(__name__)

# Name of the auxiliary heads on the model, so that the optimizer built over
# model.parameters() updates them and the checkpoint stores them.
HEADS_ATTRIBUTE = "gradient_blending_heads"
MEASURE_BATCH_SIZE = 64
_MIN_SQUARED_OVERFITTING = 1e-12


@dataclass
class BranchLosses:
    """Mean cross-entropy of every branch (fused first, then one per modality) on the two measurement sets."""

    train: torch.Tensor
    holdout: torch.Tensor


def blending_weights(before: BranchLosses, after: BranchLosses) -> torch.Tensor | None:
    """Return the weights ``w_k`` proportional to ``G_k / O_k^2``, summing to 1, or None when no branch generalized.

    ``G_k`` is the drop of held-out loss from ``before`` to ``after`` and
    ``O_k`` the change of the gap between held-out and training loss.
    """
    generalization = before.holdout.double() - after.holdout.double()
    overfitting = (after.holdout.double() - after.train.double()) - (before.holdout.double() - before.train.double())
    raw = generalization.clamp_min(0.0) / overfitting.pow(2).clamp_min(_MIN_SQUARED_OVERFITTING)
    total = raw.sum()
    if not torch.isfinite(total) or total <= 0:
        return None
    return raw / total


class GradientBlending(BalancingMethod):
    """Weighted cross-entropy of the fused head and one auxiliary head per modality, weights from the OGR."""

    def __init__(self, context: TrainingContext, heads: nn.ModuleList, holdout_fraction: float, update_every: int) -> None:
        super().__init__(context)
        self.heads = heads
        self.holdout_fraction = holdout_fraction
        self.update_every = update_every
        branches = context.num_modalities + 1
        self.weights = torch.full((branches,), 1.0 / branches, dtype=torch.float64)
        self.holdout_indices: torch.Tensor | None = None
        self.train_probe_indices: torch.Tensor | None = None
        self.previous: BranchLosses | None = None
        self.branch_names = ("fused", *context.modality_names)

    # -- held-out set ---------------------------------------------------------

    def training_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Hold out a seeded ``holdout_fraction`` of ``indices``; return the rest to train on."""
        count = indices.numel()
        holdout_count = max(1, round(self.holdout_fraction * count))
        if holdout_count >= count:
            raise ConfigError(
                f"method 'gradient-blending' would hold out {holdout_count} of {count} training samples; lower holdout_fraction"
            )
        generator = torch.Generator().manual_seed(step_seed(self.context.seed, 0x6B1E))
        order = torch.randperm(count, generator=generator)
        self.holdout_indices = indices[order[:holdout_count]].sort().values
        remaining = indices[order[holdout_count:]].sort().values
        # The training-side loss is measured on a fixed sample as large as the held-out set.
        probe = torch.randperm(remaining.numel(), generator=generator)[:holdout_count]
        self.train_probe_indices = remaining[probe].sort().values
        logger.info("gradient-blending: %d training samples held out to estimate the blending weights", holdout_count)
        return remaining

    # -- weights --------------------------------------------------------------

    def branch_logits(self, output: ModelOutput) -> list[torch.Tensor]:
        return [output.logits, *(head(z) for head, z in zip(self.heads, output.embeddings))]

    @torch.no_grad()
    def mean_losses(self, indices: torch.Tensor) -> torch.Tensor:
        """Return each branch's mean cross-entropy over the training samples ``indices``, in eval mode."""
        model = self.context.model
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(self.branch_names), dtype=torch.float64)
        try:
            loader = BatchLoader(self.context.train_set, indices, MEASURE_BATCH_SIZE, shuffle=False)
            for inputs, labels in loader.batches():
                inputs = tuple(x.to(self.context.device) for x in inputs)
                labels = labels.to(self.context.device)
                for k, logits in enumerate(self.branch_logits(model(inputs))):
                    sums[k] += float(F.cross_entropy(logits, labels, reduction="sum"))
        finally:
            model.train(was_training)
        return sums / indices.numel()

    def measure(self) -> BranchLosses:
        if self.holdout_indices is None:
            raise RuntimeError("gradient-blending has no held-out samples; the trainer must call training_indices() before the first epoch")
        return BranchLosses(train=self.mean_losses(self.train_probe_indices), holdout=self.mean_losses(self.holdout_indices))

    def on_epoch_start(self, epoch: int) -> None:
        if epoch % self.update_every != 0:
            return
        current = self.measure()
        if self.previous is not None:
            weights = blending_weights(self.previous, current)
            if weights is None:
                logger.info("gradient-blending: no branch improved on the held-out set before epoch %d; keeping the weights", epoch)
            else:
                self.weights = weights
                logger.info(
                    "gradient-blending weights before epoch %d: %s",
                    epoch,
                    ", ".join(f"{name} {w:.3f}" for name, w in zip(self.branch_names, self.weights.tolist())),
                )
        self.previous = current

    # -- loss -----------------------------------------------------------------

    def compute_loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        losses = torch.stack([F.cross_entropy(logits, labels) for logits in self.branch_logits(output)])
        loss = (self.weights.to(losses.device, losses.dtype) * losses).sum()
        logs = {}
        for name, weight, value in zip(self.branch_names, self.weights.tolist(), losses.detach().tolist()):
            logs[f"blend_weight/{name}"] = weight
            logs[f"branch_loss/{name}"] = value
        return loss, logs

    def state_dict(self) -> dict:
        previous = None if self.previous is None else {"train": self.previous.train.clone(), "holdout": self.previous.holdout.clone()}
        return {"weights": self.weights.clone(), "previous": previous}

    def load_state_dict(self, state: dict) -> None:
        self.weights = state["weights"].clone()
        previous = state["previous"]
        self.previous = None if previous is None else BranchLosses(previous["train"].clone(), previous["holdout"].clone())


@METHODS.register("gradient-blending")
def build_gradient_blending(context: TrainingContext, holdout_fraction: float = 0.1, update_every: int = 1) -> GradientBlending:
    """Online Gradient-Blending; adds one linear head per modality to the model as ``gradient_blending_heads``.

    The trainer must build the method before the optimizer, so that the
    optimizer over ``model.parameters()`` includes the heads.
    """
    if isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float)) or not (
        math.isfinite(holdout_fraction) and 0.0 < holdout_fraction < 1.0
    ):
        raise ConfigError(f"method 'gradient-blending' needs holdout_fraction in (0, 1); got {holdout_fraction!r}")
    if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
        raise ConfigError(f"method 'gradient-blending' needs update_every to be an integer >= 1 (epochs); got {update_every!r}")
    if hasattr(context.model, HEADS_ATTRIBUTE):
        raise ConfigError(f"the model already has {HEADS_ATTRIBUTE!r}; build one gradient-blending method per model")

    embeddings = probe_output(context).embeddings
    heads = nn.ModuleList(nn.Linear(z.shape[1], context.num_classes) for z in embeddings).to(context.device)
    context.model.add_module(HEADS_ATTRIBUTE, heads)
    return GradientBlending(context, heads, float(holdout_fraction), update_every)
