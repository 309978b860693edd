"""Baseline balancing methods: modality-drop, gradient-blending, OGM-GE and Acc, checked on tiny models with hand-computed values.

The gradient tests share one model (batch of two identical samples, label 0):

- encoder 0: ``z0 = ln(3) * x0`` with ``x0 = 1``; encoder 1: ``z1 = x1 - 1`` with ``x1 = 1``, so ``z = (ln 3, 0)``;
- concat head ``W = [[1, 1], [0, -1]]``, bias 0, so the per-modality logits are
  ``(ln 3, 0)`` and ``(0, 0)``: true-class probabilities 3/4 and 1/2 per sample,
  scores ``s0 = 1.5``, ``s1 = 1.0``, ratio 1.5 (modality 0 dominant);
- fused logits ``(ln 3, 0)``: softmax ``(3/4, 1/4)``, so ``dL/dlogits = (-1/4, 1/4)``,
  ``dL/dz0 = -1/4`` and ``dL/dz1 = 1 * (-1/4) + (-1) * (1/4) = -1/2``;
- the weight and the bias of encoder 0 get gradient -1/4, those of encoder 1 get -1/2.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modalbalance.data.base import EncoderSpec, TensorMultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.methods import METHODS, TrainingContext
from modalbalance.methods.acc import acc_coefficients
from modalbalance.methods.gradient_blending import HEADS_ATTRIBUTE, BranchLosses, blending_weights
from modalbalance.methods.modality_drop import drop_mask
from modalbalance.methods.ogm_ge import ogm_coefficients, score_ratios, step_seed
from modalbalance.models.base import LateFusionModel
from modalbalance.models.fusion import ConcatFusion, FiLMFusion

OGM_K = 1.0 - math.tanh(0.5)  # alpha 1, ratio 1.5
ACC_K = 1.0 + math.tanh(0.5)  # alpha 1, 1 / (1 / 1.5) - 1 = 0.5


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def make_dataset(inputs, labels, num_classes, names=("gray", "colored")):
    specs = tuple(EncoderSpec("cgmnist-cnn") for _ in names)
    return TensorMultimodalDataset(inputs, torch.as_tensor(labels), names, tuple(str(k) for k in range(num_classes)), specs)


def make_context(model, dataset, seed=0, epochs=4):
    return TrainingContext(
        model=model,
        train_set=dataset,
        device=torch.device("cpu"),
        epochs=epochs,
        seed=seed,
        prototype_accumulator=lambda epoch: None,
    )


def hand_model():
    """The two-encoder concat model described in the module docstring."""
    encoder0, encoder1 = nn.Linear(1, 1), nn.Linear(1, 1)
    fusion = ConcatFusion([1, 1], 2)
    with torch.no_grad():
        encoder0.weight.fill_(math.log(3.0))
        encoder0.bias.zero_()
        encoder1.weight.fill_(1.0)
        encoder1.bias.fill_(-1.0)
        fusion.classifier.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
        fusion.classifier.bias.zero_()
    return LateFusionModel([encoder0, encoder1], fusion)


def hand_setup():
    model = hand_model()
    inputs = (torch.ones(2, 1), torch.ones(2, 1))
    labels = torch.zeros(2, dtype=torch.long)
    return model, inputs, labels, make_context(model, make_dataset(inputs, [0, 0], 2))


def step(method, model, inputs, labels, epoch=0):
    """Run one training step's hooks up to (and including) on_after_backward; return the logs."""
    method.on_epoch_start(epoch)
    inputs, labels = method.transform_batch(inputs, labels, epoch)
    output = model(inputs)
    loss, logs = method.compute_loss(output, labels, epoch)
    model.zero_grad(set_to_none=True)
    loss.backward()
    method.on_after_backward(output, labels, epoch)
    return logs


def gradients(module):
    return [p.grad.clone() for p in module.parameters()]


# --- scores and coefficients --------------------------------------------------


def test_score_ratios_two_modalities():
    ratios = score_ratios(torch.tensor([1.5, 1.0]))
    assert ratios.tolist() == pytest.approx([1.5, 2.0 / 3.0], abs=1e-12)


def test_score_ratios_three_modalities_use_mean_of_others():
    ratios = score_ratios(torch.tensor([3.0, 1.0, 2.0]))
    # 3 / mean(1, 2) = 2; 1 / mean(3, 2) = 0.4; 2 / mean(3, 1) = 1
    assert ratios.tolist() == pytest.approx([2.0, 0.4, 1.0], abs=1e-12)


def test_ogm_coefficients_by_hand():
    coefficients = ogm_coefficients(torch.tensor([1.5, 1.0]), alpha=1.0)
    assert coefficients[0].item() == pytest.approx(OGM_K, abs=1e-12)
    assert coefficients[1].item() == 1.0


def test_ogm_coefficients_alpha_scales_gap():
    # ratio 3, alpha 0.5: 1 - tanh(0.5 * 2) = 1 - tanh(1)
    coefficients = ogm_coefficients(torch.tensor([3.0, 1.0]), alpha=0.5)
    assert coefficients[0].item() == pytest.approx(1.0 - math.tanh(1.0), abs=1e-12)
    assert coefficients[1].item() == 1.0


def test_ogm_coefficients_equal_scores():
    assert ogm_coefficients(torch.tensor([2.0, 2.0]), alpha=1.0).tolist() == [1.0, 1.0]


def test_acc_coefficients_by_hand():
    coefficients = acc_coefficients(torch.tensor([1.5, 1.0]), alpha=1.0)
    assert coefficients[0].item() == 1.0
    assert coefficients[1].item() == pytest.approx(ACC_K, abs=1e-12)


# --- OGM-GE ---------------------------------------------------------------------


def test_hand_model_gradients_before_modulation():
    model, inputs, labels, context = hand_setup()
    step(METHODS.build("naive", context), model, inputs, labels)
    assert model.encoders[0].weight.grad.item() == pytest.approx(-0.25, abs=1e-7)
    assert model.encoders[0].bias.grad.item() == pytest.approx(-0.25, abs=1e-7)
    assert model.encoders[1].weight.grad.item() == pytest.approx(-0.5, abs=1e-7)
    assert model.encoders[1].bias.grad.item() == pytest.approx(-0.5, abs=1e-7)


def test_ogm_ge_scales_dominant_encoder_by_k():
    model, inputs, labels, context = hand_setup()
    method = METHODS.build("ogm-ge", context, alpha=1.0, noise=False)
    logs = step(method, model, inputs, labels)
    assert model.encoders[0].weight.grad.item() == pytest.approx(-0.25 * OGM_K, abs=1e-7)
    assert model.encoders[0].bias.grad.item() == pytest.approx(-0.25 * OGM_K, abs=1e-7)
    assert logs["gradient_coefficient/gray"] == pytest.approx(OGM_K, abs=1e-7)
    assert logs["imbalance_ratio"] == pytest.approx(1.5, abs=1e-6)


def test_ogm_ge_leaves_slow_encoder_and_head_alone():
    model, inputs, labels, context = hand_setup()
    step(METHODS.build("naive", context), model, inputs, labels)
    expected_slow, expected_head = gradients(model.encoders[1]), gradients(model.fusion)
    step(METHODS.build("ogm-ge", context, alpha=1.0, noise=False), model, inputs, labels)
    for actual, expected in zip(gradients(model.encoders[1]), expected_slow):
        assert torch.equal(actual, expected)
    for actual, expected in zip(gradients(model.fusion), expected_head):
        assert torch.equal(actual, expected)
    assert model.encoders[1].weight.grad.item() == pytest.approx(-0.5, abs=1e-7)


def test_ogm_ge_scales_every_parameter_shape():
    torch.manual_seed(1)
    conv_encoder = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    mlp_encoder = nn.Linear(4, 3)
    model = LateFusionModel([conv_encoder, mlp_encoder], ConcatFusion([3, 3], 2))
    inputs = (torch.randn(6, 1, 4, 4), torch.randn(6, 4))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    context = make_context(model, make_dataset(inputs, labels.tolist(), 2))

    naive = METHODS.build("naive", context)
    torch.manual_seed(2)
    step(naive, model, inputs, labels)
    before = [gradients(model.encoders[0]), gradients(model.encoders[1])]

    method = METHODS.build("ogm-ge", context, alpha=1.0, noise=False)
    torch.manual_seed(2)
    logs = step(method, model, inputs, labels)
    k = [logs["gradient_coefficient/gray"], logs["gradient_coefficient/colored"]]
    dominant = 0 if k[0] < 1.0 else 1
    assert min(k) < 1.0
    assert max(k) == 1.0
    for actual, expected in zip(gradients(model.encoders[dominant]), before[dominant]):
        torch.testing.assert_close(actual, expected * k[dominant], rtol=1e-6, atol=1e-9)
    for actual, expected in zip(gradients(model.encoders[1 - dominant]), before[1 - dominant]):
        assert torch.equal(actual, expected)


def test_ogm_ge_noise_matches_seeded_draw():
    torch.manual_seed(3)
    model = LateFusionModel([nn.Linear(5, 4), nn.Linear(5, 4)], ConcatFusion([4, 4], 3))
    inputs = (torch.randn(8, 5), torch.randn(8, 5))
    labels = torch.randint(0, 3, (8,))
    context = make_context(model, make_dataset(inputs, labels.tolist(), 3), seed=7)

    step(METHODS.build("naive", context), model, inputs, labels, epoch=2)
    before = [gradients(model.encoders[0]), gradients(model.encoders[1])]
    logs = step(METHODS.build("ogm-ge", context, alpha=1.0, noise=True), model, inputs, labels, epoch=2)
    k = [logs["gradient_coefficient/gray"], logs["gradient_coefficient/colored"]]
    dominant = 0 if k[0] < 1.0 else 1
    assert k[dominant] < 1.0
    assert k[1 - dominant] == 1.0

    generator = torch.Generator().manual_seed(step_seed(7, 2, 0))
    for actual, gradient in zip(gradients(model.encoders[dominant]), before[dominant]):
        noise = torch.randn(gradient.shape, generator=generator) * gradient.std(correction=0)
        torch.testing.assert_close(actual, gradient * k[dominant] + noise, rtol=1e-6, atol=1e-7)
    for actual, gradient in zip(gradients(model.encoders[1 - dominant]), before[1 - dominant]):
        assert torch.equal(actual, gradient)


def test_ogm_ge_outside_window_changes_nothing():
    model, inputs, labels, context = hand_setup()
    method = METHODS.build("ogm-ge", context, alpha=1.0, noise=True, modulation_start=1, modulation_end=2)
    logs = step(method, model, inputs, labels, epoch=3)
    assert model.encoders[0].weight.grad.item() == pytest.approx(-0.25, abs=1e-7)
    assert model.encoders[1].weight.grad.item() == pytest.approx(-0.5, abs=1e-7)
    assert logs["gradient_coefficient/gray"] == pytest.approx(OGM_K, abs=1e-7)


def test_ogm_ge_inside_window_modulates():
    model, inputs, labels, context = hand_setup()
    method = METHODS.build("ogm-ge", context, alpha=1.0, noise=False, modulation_start=1, modulation_end=2)
    step(method, model, inputs, labels, epoch=2)
    assert model.encoders[0].weight.grad.item() == pytest.approx(-0.25 * OGM_K, abs=1e-7)


def test_ogm_ge_rejects_film():
    model = LateFusionModel([nn.Linear(2, 3), nn.Linear(2, 3)], FiLMFusion([3, 3], 2))
    context = make_context(model, make_dataset((torch.randn(4, 2), torch.randn(4, 2)), [0, 1, 0, 1], 2))
    with pytest.raises(ConfigError, match="needs concat or sum fusion"):
        METHODS.build("ogm-ge", context)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"noise": "yes"}, "noise"),
        ({"modulation_start": 3, "modulation_end": 1}, "modulation_end"),
    ],
)
def test_ogm_ge_rejects_invalid_params(params, message):
    _, _, _, context = hand_setup()
    with pytest.raises(ConfigError, match=message):
        METHODS.build("ogm-ge", context, **params)


# --- Acc --------------------------------------------------------------------------


def test_acc_scales_slow_encoder_by_factor():
    model, inputs, labels, context = hand_setup()
    logs = step(METHODS.build("acc", context, alpha=1.0), model, inputs, labels)
    assert model.encoders[1].weight.grad.item() == pytest.approx(-0.5 * ACC_K, abs=1e-7)
    assert model.encoders[1].bias.grad.item() == pytest.approx(-0.5 * ACC_K, abs=1e-7)
    assert logs["gradient_coefficient/colored"] == pytest.approx(ACC_K, abs=1e-7)


def test_acc_leaves_dominant_encoder_alone():
    model, inputs, labels, context = hand_setup()
    step(METHODS.build("acc", context, alpha=1.0), model, inputs, labels)
    assert model.encoders[0].weight.grad.item() == pytest.approx(-0.25, abs=1e-7)
    assert model.encoders[0].bias.grad.item() == pytest.approx(-0.25, abs=1e-7)


def test_acc_rejects_film():
    model = LateFusionModel([nn.Linear(2, 3), nn.Linear(2, 3)], FiLMFusion([3, 3], 2))
    context = make_context(model, make_dataset((torch.randn(4, 2), torch.randn(4, 2)), [0, 1, 0, 1], 2))
    with pytest.raises(ConfigError, match="'acc' needs concat or sum fusion"):
        METHODS.build("acc", context)


# --- modality-drop ------------------------------------------------------------


def test_drop_mask_certain_drop_of_one_modality():
    mask = drop_mask(5, 2, droppable=[1], drop_probability=1.0, seed=(0, 0, 0))
    assert mask[:, 1].all()
    assert not mask[:, 0].any()


def test_drop_mask_zero_probability():
    assert not drop_mask(50, 2, droppable=[0, 1], drop_probability=0.0, seed=(0, 0, 0)).any()


def test_drop_mask_drops_one_modality_per_sample():
    mask = drop_mask(200, 2, droppable=[0, 1], drop_probability=1.0, seed=(3, 1, 4))
    assert (mask.sum(dim=1) == 1).all()
    assert mask[:, 0].any()
    assert mask[:, 1].any()


def test_drop_mask_is_seeded():
    first = drop_mask(64, 2, [0, 1], 0.5, seed=(1, 2, 3))
    again = drop_mask(64, 2, [0, 1], 0.5, seed=(1, 2, 3))
    next_step = drop_mask(64, 2, [0, 1], 0.5, seed=(1, 2, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, next_step)


def test_drop_mask_rate():
    mask = drop_mask(20000, 2, [0, 1], 0.3, seed=(0, 0, 0))
    assert mask.any(dim=1).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert mask[:, 0].float().mean().item() == pytest.approx(0.15, abs=0.02)


def test_modality_drop_zeros_exactly_chosen_inputs():
    gray, colored = torch.rand(32, 1, 4, 4) + 0.5, torch.rand(32, 3, 4, 4) + 0.5
    labels = torch.arange(32) % 3
    model = LateFusionModel([nn.Flatten(), nn.Flatten()], ConcatFusion([16, 48], 3))
    context = make_context(model, make_dataset((gray, colored), labels.tolist(), 3), seed=5)
    method = METHODS.build("modality-drop", context, drop_probability=0.5)

    method.on_epoch_start(3)
    method.transform_batch((gray, colored), labels, 3)  # step 0
    (new_gray, new_colored), new_labels = method.transform_batch((gray, colored), labels, 3)  # step 1

    mask = drop_mask(32, 2, [0, 1], 0.5, seed=(5, 3, 1))
    assert mask.any()
    assert torch.equal(new_labels, labels)
    for original, dropped, column in ((gray, new_gray, mask[:, 0]), (colored, new_colored, mask[:, 1])):
        assert (dropped[column] == 0).all()
        assert torch.equal(dropped[~column], original[~column])


def test_modality_drop_only_named_modalities():
    gray, colored = torch.rand(16, 1, 2, 2) + 0.5, torch.rand(16, 3, 2, 2) + 0.5
    labels = torch.zeros(16, dtype=torch.long)
    model = LateFusionModel([nn.Flatten(), nn.Flatten()], ConcatFusion([4, 12], 2))
    context = make_context(model, make_dataset((gray, colored), [0] * 16, 2))
    method = METHODS.build("modality-drop", context, drop_probability=1.0, modalities=["colored"])
    method.on_epoch_start(0)
    (new_gray, new_colored), _ = method.transform_batch((gray, colored), labels, 0)
    assert torch.equal(new_gray, gray)
    assert (new_colored == 0).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"drop_probability": 1.5}, r"drop_probability in \[0, 1\]"),
        ({"modalities": ["audio"]}, "unknown modality 'audio'"),
        ({"modalities": []}, "non-empty list"),
    ],
)
def test_modality_drop_rejects_invalid_params(params, message):
    _, _, _, context = hand_setup()
    with pytest.raises(ConfigError, match=message):
        METHODS.build("modality-drop", context, **params)


# --- gradient-blending --------------------------------------------------------


def test_blending_weights_by_hand():
    # G = (0.2, 0.4, 0.1); O = (0.2 - 0.1, 0.3 - 0.1, 0.2 - 0.1) = (0.1, 0.2, 0.1)
    # G / O^2 = (20, 10, 10), normalized (0.5, 0.25, 0.25)
    before = BranchLosses(train=torch.tensor([0.9, 0.9, 0.9]), holdout=torch.tensor([1.0, 1.0, 1.0]))
    after = BranchLosses(train=torch.tensor([0.6, 0.3, 0.7]), holdout=torch.tensor([0.8, 0.6, 0.9]))
    weights = blending_weights(before, after)
    assert weights.tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-6)


def test_blending_weights_zero_for_worse_branch():
    # Branch 2's held-out loss rose, so it gets weight 0; the others: 0.2/0.1^2 = 20 and 0.1/0.1^2 = 10.
    before = BranchLosses(train=torch.tensor([0.9, 0.9, 0.9]), holdout=torch.tensor([1.0, 1.0, 1.0]))
    after = BranchLosses(train=torch.tensor([0.6, 0.7, 0.8]), holdout=torch.tensor([0.8, 0.9, 1.2]))
    weights = blending_weights(before, after)
    assert weights.tolist() == pytest.approx([2.0 / 3.0, 1.0 / 3.0, 0.0], abs=1e-6)


def test_blending_weights_none_without_gain():
    before = BranchLosses(train=torch.tensor([0.5, 0.5]), holdout=torch.tensor([1.0, 1.0]))
    after = BranchLosses(train=torch.tensor([0.4, 0.4]), holdout=torch.tensor([1.1, 1.0]))
    assert blending_weights(before, after) is None


def blending_setup(seed=0, count=20, update_every=1):
    torch.manual_seed(seed)
    inputs = (torch.randn(count, 3), torch.randn(count, 2))
    labels = (torch.arange(count) % 3).tolist()
    model = LateFusionModel([nn.Linear(3, 4), nn.Linear(2, 5)], ConcatFusion([4, 5], 3))
    context = make_context(model, make_dataset(inputs, labels, 3), seed=seed)
    method = METHODS.build("gradient-blending", context, holdout_fraction=0.25, update_every=update_every)
    return model, inputs, torch.tensor(labels), method


def test_gradient_blending_heads_are_model_parameters():
    model, _, _, method = blending_setup()
    heads = getattr(model, HEADS_ATTRIBUTE)
    parameter_ids = {id(p) for p in model.parameters()}
    assert [(h.in_features, h.out_features) for h in heads] == [(4, 3), (5, 3)]
    assert all(id(p) in parameter_ids for p in heads.parameters())
    assert f"{HEADS_ATTRIBUTE}.0.weight" in model.state_dict()


def test_gradient_blending_holds_out_training_samples():
    _, _, _, method = blending_setup(seed=4)
    remaining = method.training_indices(torch.arange(20))
    holdout = method.holdout_indices
    assert holdout.numel() == 5
    assert remaining.numel() == 15
    assert set(remaining.tolist()).isdisjoint(holdout.tolist())
    assert sorted(remaining.tolist() + holdout.tolist()) == list(range(20))
    assert set(method.train_probe_indices.tolist()) <= set(remaining.tolist())
    assert method.train_probe_indices.numel() == 5


def test_gradient_blending_holdout_is_seeded():
    _, _, _, first = blending_setup(seed=4)
    _, _, _, again = blending_setup(seed=4)
    _, _, _, other = blending_setup(seed=5)
    first.training_indices(torch.arange(20))
    again.training_indices(torch.arange(20))
    other.training_indices(torch.arange(20))
    assert torch.equal(first.holdout_indices, again.holdout_indices)
    assert not torch.equal(first.holdout_indices, other.holdout_indices)


def test_gradient_blending_rejects_holdout_of_everything():
    _, _, _, method = blending_setup()
    method.holdout_fraction = 0.99
    with pytest.raises(ConfigError, match="lower holdout_fraction"):
        method.training_indices(torch.arange(20))


def test_gradient_blending_initial_weights_uniform():
    _, _, _, method = blending_setup()
    assert method.weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_gradient_blending_weights_from_measurements():
    _, _, _, method = blending_setup(update_every=2)
    measurements = iter(
        [
            BranchLosses(train=torch.tensor([0.9, 0.9, 0.9]), holdout=torch.tensor([1.0, 1.0, 1.0])),
            BranchLosses(train=torch.tensor([0.6, 0.3, 0.7]), holdout=torch.tensor([0.8, 0.6, 0.9])),
        ]
    )
    calls = []
    method.measure = lambda: calls.append(1) or next(measurements)
    method.on_epoch_start(0)
    method.on_epoch_start(1)  # not a multiple of update_every: no measurement
    assert len(calls) == 1
    assert method.weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    method.on_epoch_start(2)
    assert len(calls) == 2
    assert method.weights.tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-6)


def test_gradient_blending_loss_is_weighted_sum():
    model, inputs, labels, method = blending_setup()
    method.weights = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    output = model(inputs)
    loss, logs = method.compute_loss(output, labels, 0)
    heads = getattr(model, HEADS_ATTRIBUTE)
    expected = (
        0.5 * F.cross_entropy(output.logits, labels)
        + 0.25 * F.cross_entropy(heads[0](output.embeddings[0]), labels)
        + 0.25 * F.cross_entropy(heads[1](output.embeddings[1]), labels)
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert logs["blend_weight/fused"] == 0.5
    assert logs["blend_weight/colored"] == 0.25


def test_gradient_blending_measures_branch_losses():
    model, inputs, labels, method = blending_setup()
    method.training_indices(torch.arange(20))
    measured = method.measure()
    holdout = method.holdout_indices
    with torch.no_grad():
        output = model(tuple(x[holdout] for x in inputs))
        heads = getattr(model, HEADS_ATTRIBUTE)
        expected = [F.cross_entropy(output.logits, labels[holdout])] + [
            F.cross_entropy(head(z), labels[holdout]) for head, z in zip(heads, output.embeddings)
        ]
    assert measured.holdout.tolist() == pytest.approx([e.item() for e in expected], abs=1e-6)
    assert measured.train.shape == (3,)


def test_gradient_blending_state_round_trip():
    _, _, _, method = blending_setup()
    method.weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    method.previous = BranchLosses(train=torch.tensor([1.0, 2.0, 3.0]), holdout=torch.tensor([4.0, 5.0, 6.0]))
    _, _, _, restored = blending_setup()
    restored.load_state_dict(method.state_dict())
    assert restored.weights.tolist() == [0.2, 0.3, 0.5]
    assert restored.previous.holdout.tolist() == [4.0, 5.0, 6.0]


def test_gradient_blending_trains_heads_in_a_run(tmp_path):
    from modalbalance.training.runner import TrainingRun

    config = {
        "data": {"name": "digits", "train_size": 200, "test_size": 60},
        "model": {"embedding_dim": 16},
        "method": {"name": "gradient-blending", "holdout_fraction": 0.2},
        "optimizer": {"lr": 0.05},
        "train": {"epochs": 1, "progress": False, "checkpoint": False, "missing_class": "top-up"},
    }
    run = TrainingRun(config, tmp_path / "run")
    heads = getattr(run.model, HEADS_ATTRIBUTE)
    optimized = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in heads.parameters())
    assert len(run.train_loader.indices) == 160
    initial = heads[0].weight.detach().clone()
    run.fit()
    assert not torch.equal(heads[0].weight.detach(), initial)
