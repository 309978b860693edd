"""OGM-GE: on-the-fly gradient modulation of the dominant encoder, with generalization enhancement.

Peng, Wei, Deng, Wang and Hu, "Balanced Multimodal Learning via On-the-fly
Gradient Modulation", CVPR 2022. Every step, with ``s^m`` the sum over the
batch of ``softmax(modality_logits^m)[true class]``:

- two modalities: ``ratio^m = s^m / s^other``; for more, ``s^m`` over the mean
  score of the other modalities (our generalisation);
- ``k^m = 1 - tanh(alpha * relu(ratio^m - 1))``, so the dominant modality
  (ratio above 1) gets ``k < 1`` and the others get exactly 1;
- after backward, every gradient of the dominant modality's encoder is
  multiplied by ``k``, whatever its shape or name, and, with ``noise``, gets
  Gaussian noise whose standard deviation is that gradient's own (population)
  standard deviation before scaling. Other encoders and the fusion head are
  left alone.

Under distributed data parallel the scores are summed over processes, so
every process computes the coefficients of the global batch and applies them
to the same all-reduced gradients. The noise comes from a generator seeded by
(seed, epoch, step), which is the same on every process.

The per-modality logits must come from a fusion that splits into one linear
part per modality (concat, sum). Every parameter of the encoder is scaled:
an implementation that scaled only 4-D convolution kernels would leave
fully-connected encoders, biases and batch-norm parameters unmodulated.

This module also contains the machinery shared with ``acc`` (the same scores,
ratios and window, with another coefficient) and the model probe used by
``gradient-blending``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.data.base import collate_multimodal
from modalbalance.errors import ConfigError, TrainingError
from modalbalance.methods.base import METHODS, BalancingMethod, TrainingContext
from modalbalance.models.base import ModelOutput
from modalbalance.pmr import modality_scores
from modalbalance.training import distributed

# A score of 0 (every true-class probability underflowed) must not divide by zero.
_MIN_SCORE = torch.finfo(torch.float64).tiny


# -- helpers shared with acc and gradient-blending ---------------------------


@torch.no_grad()
def probe_output(context: TrainingContext) -> ModelOutput:
    """Run the model in eval mode on the first two training samples and return its output.

    Methods call this while they are built, to learn the embedding sizes or
    whether the fusion splits into per-modality logits. Eval mode and no
    gradients leave batch-norm statistics and the random state untouched.
    """
    dataset = context.train_set
    indices = list(range(min(2, len(dataset))))
    batch = dataset.get_batch(indices)
    if batch is None:
        batch = collate_multimodal([dataset[i] for i in indices])
    inputs = tuple(x.to(context.device) for x in batch[0])
    model = context.model
    was_training = model.training
    model.eval()
    try:
        return model(inputs)
    finally:
        model.train(was_training)


def encoder_parameters(model: nn.Module, modality: int) -> list[nn.Parameter]:
    """Return the parameters of one modality's encoder.

    A model may define ``modality_parameters(m)``; otherwise its ``encoders``
    (one module per modality, as in ``LateFusionModel``) are used.
    """
    if hasattr(model, "modality_parameters"):
        return list(model.modality_parameters(modality))
    encoders = getattr(model, "encoders", None)
    if encoders is None:
        raise ConfigError(
            f"this model ({type(model).__name__}) has neither 'encoders' nor 'modality_parameters(m)', "
            "so gradient modulation cannot tell which parameters belong to which modality"
        )
    return list(encoders[modality].parameters())


def step_seed(*keys: int) -> int:
    """Derive a 32-bit seed from integers such as (run seed, epoch, step); nearby keys give unrelated seeds."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def score_ratios(scores: torch.Tensor) -> torch.Tensor:
    """Return each modality's score over the mean score of the other modalities (``s^0/s^1``, ``s^1/s^0`` for two)."""
    scores = scores.detach().double()
    count = scores.numel()
    if count < 2:
        raise ValueError(f"score ratios need at least two modalities; got {count}")
    others = (scores.sum() - scores) / (count - 1)
    return scores / others.clamp_min(_MIN_SCORE)


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """Return ``k^m = 1 - tanh(alpha * relu(ratio^m - 1))``: below 1 for the dominant modality, 1 for the others."""
    ratios = score_ratios(scores)
    return 1.0 - torch.tanh(alpha * torch.relu(ratios - 1.0))


def check_window(modulation_start: int, modulation_end: int | None) -> None:
    if isinstance(modulation_start, bool) or not isinstance(modulation_start, int) or modulation_start < 0:
        raise ConfigError(f"modulation_start must be an integer >= 0; got {modulation_start!r}")
    if modulation_end is not None and (isinstance(modulation_end, bool) or not isinstance(modulation_end, int) or modulation_end < modulation_start):
        raise ConfigError(
            f"modulation_end must be null or an integer >= modulation_start ({modulation_start}); got {modulation_end!r}"
        )


def check_alpha(method_name: str, alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ConfigError(f"method {method_name!r} needs alpha to be a finite number >= 0; got {alpha!r}")


class GradientModulation(BalancingMethod):
    """Scale each modality's encoder gradients by a coefficient computed from that step's modality scores.

    Subclasses define ``coefficients(scores)`` and which modalities get noise.
    The coefficients are computed in ``compute_loss`` (so they are logged)
    and applied in ``on_after_backward``, only in epochs ``modulation_start ..
    modulation_end`` (inclusive; None means to the last epoch).
    """

    name = "gradient-modulation"

    def __init__(
        self,
        context: TrainingContext,
        alpha: float,
        modulation_start: int = 0,
        modulation_end: int | None = None,
        noise: bool = False,
    ) -> None:
        super().__init__(context)
        self.alpha = float(alpha)
        self.modulation_start = modulation_start
        self.modulation_end = modulation_end
        self.noise = noise
        self.parameter_groups = [encoder_parameters(context.model, m) for m in range(context.num_modalities)]
        self._check_disjoint()
        self._coefficients: torch.Tensor | None = None
        self._noisy: torch.Tensor | None = None
        self._active = False
        self._step = 0
        # Under DDP each process scores only its slice of the batch. Summing the
        # scores over processes makes every process scale the all-reduced
        # gradients by the coefficients of the whole global batch.
        self.score_reducer = distributed.all_reduce_sum if distributed.is_distributed() else None

    def _check_disjoint(self) -> None:
        seen: dict[int, int] = {}
        for m, parameters in enumerate(self.parameter_groups):
            for parameter in parameters:
                if seen.setdefault(id(parameter), m) != m:
                    names = self.context.modality_names
                    raise ConfigError(
                        f"method {self.name!r} needs separate encoder parameters per modality; "
                        f"modalities {names[seen[id(parameter)]]!r} and {names[m]!r} share a parameter"
                    )

    def in_window(self, epoch: int) -> bool:
        return epoch >= self.modulation_start and (self.modulation_end is None or epoch <= self.modulation_end)

    def coefficients(self, scores: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def noisy_modalities(self, scores: torch.Tensor) -> torch.Tensor:
        """Return a boolean mask of the modalities whose gradients get noise (none by default)."""
        return torch.zeros(scores.numel(), dtype=torch.bool)

    def on_epoch_start(self, epoch: int) -> None:
        self._step = 0

    def compute_loss(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        if output.modality_logits is None:
            raise TrainingError(f"method {self.name!r} received no per-modality logits; use concat or sum fusion")
        scores = modality_scores(output.modality_logits, labels)
        if self.score_reducer is not None:
            scores = self.score_reducer(scores)
        self._coefficients = self.coefficients(scores)
        self._noisy = self.noisy_modalities(scores) if self.noise else torch.zeros(scores.numel(), dtype=torch.bool)
        self._active = self.in_window(epoch)

        logs = {"imbalance_ratio": float(scores[0] / scores[1]) if scores.numel() == 2 else float(scores.min() / scores.max())}
        for name, coefficient in zip(self.context.modality_names, self._coefficients.tolist()):
            logs[f"gradient_coefficient/{name}"] = coefficient
        return F.cross_entropy(output.logits, labels), logs

    def on_after_backward(self, output: ModelOutput, labels: torch.Tensor, epoch: int) -> None:
        step = self._step
        self._step += 1
        if not self._active or self._coefficients is None:
            return
        generator = None
        for m, parameters in enumerate(self.parameter_groups):
            coefficient = float(self._coefficients[m])
            add_noise = bool(self._noisy[m])
            if coefficient == 1.0 and not add_noise:
                continue
            for parameter in parameters:
                gradient = parameter.grad
                if gradient is None:
                    continue
                noise_std = gradient.std(correction=0) if add_noise else None
                gradient.mul_(coefficient)
                if add_noise:
                    if generator is None:
                        generator = torch.Generator(device=gradient.device).manual_seed(step_seed(self.context.seed, epoch, step))
                    noise = torch.randn(gradient.shape, generator=generator, device=gradient.device, dtype=gradient.dtype)
                    gradient.add_(noise * noise_std)

class OGMGE(GradientModulation):
    """OGM-GE: ``k = 1 - tanh(alpha * relu(ratio - 1))`` on the dominant encoder's gradients, plus optional noise."""

    name = "ogm-ge"

    def coefficients(self, scores: torch.Tensor) -> torch.Tensor:
        return ogm_coefficients(scores, self.alpha)

    def noisy_modalities(self, scores: torch.Tensor) -> torch.Tensor:
        # Noise goes where the gradient is scaled down: the modalities scoring above the others.
        return score_ratios(scores) > 1.0


def check_decomposable(context: TrainingContext, method_name: str) -> None:
    """Raise ConfigError unless the model returns per-modality logits (concat or sum fusion)."""
    if context.num_modalities < 2:
        raise ConfigError(f"method {method_name!r} needs at least two modalities; got {context.num_modalities}")
    if probe_output(context).modality_logits is None:
        fusion = getattr(context.model, "fusion", None)
        what = type(fusion).__name__ if fusion is not None else type(context.model).__name__
        raise ConfigError(
            f"method {method_name!r} needs concat or sum fusion, whose logits split into one part per modality; "
            f"this model's fusion ({what}) does not split. Set model.fusion=concat or model.fusion=sum"
        )


@METHODS.register("ogm-ge")
def build_ogm_ge(
    context: TrainingContext,
    alpha: float = 1.0,
    noise: bool = True,
    modulation_start: int = 0,
    modulation_end: int | None = None,
) -> OGMGE:
    """OGM-GE; ``noise: false`` gives plain OGM (gradient modulation without generalization enhancement)."""
    check_alpha("ogm-ge", alpha)
    if not isinstance(noise, bool):
        raise ConfigError(f"method 'ogm-ge' needs noise to be true or false; got {noise!r}")
    check_window(modulation_start, modulation_end)
    check_decomposable(context, "ogm-ge")
    return OGMGE(context, alpha, modulation_start, modulation_end, noise=noise)

