"""Gradient angles between the fused loss and each modality's unimodal loss, checked against hand-computed gradients."""

import math

import pytest
import torch
from torch import nn

from modalbalance.analysis.gradients import epoch_gradient_angles, gradient_angles, vector_angle
from modalbalance.models.base import LateFusionModel
from modalbalance.models.fusion import ConcatFusion, FiLMFusion
from modalbalance.pmr import PrototypeBank

torch.set_num_threads(1)

# Two modalities with two input features each, scalar embeddings z_m = w_m . x_m
# and a concat head over [z_0, z_1] with two classes.
ENCODER_WEIGHTS = ([0.5, -1.0], [1.0, 0.25])
HEAD_WEIGHT = [[1.0, -0.5], [-1.0, 2.0]]  # rows: classes, columns: modalities
HEAD_BIAS = [0.2, -0.2]
INPUTS = ([[1.0, 2.0], [-1.0, 0.5]], [[0.5, 1.0], [2.0, -1.0]])  # per modality: two samples
LABELS = [0, 1]


class OpaqueConcat(ConcatFusion):
    """Concat fusion that hides its per-modality logits, like film and gated."""

    def modality_logits(self, embeddings):
        return None


def tiny_model(fusion_class=ConcatFusion) -> LateFusionModel:
    encoders = [nn.Linear(2, 1, bias=False) for _ in ENCODER_WEIGHTS]
    fusion = fusion_class([1, 1], 2)
    with torch.no_grad():
        for encoder, weights in zip(encoders, ENCODER_WEIGHTS):
            encoder.weight.copy_(torch.tensor([weights]))
        fusion.classifier.weight.copy_(torch.tensor(HEAD_WEIGHT))
        fusion.classifier.bias.copy_(torch.tensor(HEAD_BIAS))
    return LateFusionModel(encoders, fusion)


def tiny_batch():
    return tuple(torch.tensor(x) for x in INPUTS), torch.tensor(LABELS)


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def embedding(m, i):
    return sum(w * x for w, x in zip(ENCODER_WEIGHTS[m], INPUTS[m][i]))


def encoder_gradient(m, logit_derivative):
    """dL/dw_m = mean_i (dL_i/dz_m,i) x_m,i, where ``logit_derivative(i)`` returns dL_i/dz_m,i."""
    samples = len(LABELS)
    return [sum(logit_derivative(i) * INPUTS[m][i][j] for i in range(samples)) / samples for j in range(2)]


def cross_entropy_derivative(logits, label, column):
    """d CE / dz_m for logits linear in z_m with slope HEAD_WEIGHT[k][m] for class k."""
    probabilities = softmax(logits)
    return sum((probabilities[k] - (k == label)) * HEAD_WEIGHT[k][column] for k in range(2))


def fused_logits(i):
    return [HEAD_WEIGHT[k][0] * embedding(0, i) + HEAD_WEIGHT[k][1] * embedding(1, i) + HEAD_BIAS[k] for k in range(2)]


def head_logits(m, i):
    # Concat gives every modality an equal share of the bias.
    return [HEAD_WEIGHT[k][m] * embedding(m, i) + HEAD_BIAS[k] / 2 for k in range(2)]


def angle_degrees(first, second):
    dot = sum(a * b for a, b in zip(first, second))
    norms = math.sqrt(sum(a * a for a in first)) * math.sqrt(sum(b * b for b in second))
    return math.degrees(math.acos(dot / norms))


def test_vector_angle_known_values():
    assert vector_angle(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert vector_angle(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 0.0])) == pytest.approx(45.0)
    assert vector_angle(torch.tensor([1.0, 2.0]), torch.tensor([-2.0, -4.0])) == pytest.approx(180.0)
    assert vector_angle(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])) == 0.0
    assert math.isnan(vector_angle(torch.zeros(3), torch.ones(3)))


def test_vector_angle_small_angle_accurate():
    # arccos of the cosine would give about 1e-6 degrees of rounding noise here.
    first = torch.tensor([1.0, 0.0], dtype=torch.float64)
    second = torch.tensor([1.0, 1e-9], dtype=torch.float64)
    assert vector_angle(first, second) == pytest.approx(math.degrees(1e-9), rel=1e-6)


def test_angle_matches_hand_computation_head_loss():
    inputs, labels = tiny_batch()
    angles = gradient_angles(tiny_model(), inputs, labels, modality_names=["audio", "visual"])

    for m, name in enumerate(("audio", "visual")):
        fused = encoder_gradient(m, lambda i: cross_entropy_derivative(fused_logits(i), LABELS[i], m))
        unimodal = encoder_gradient(m, lambda i: cross_entropy_derivative(head_logits(m, i), LABELS[i], m))
        expected = angle_degrees(fused, unimodal)
        assert expected > 1.0  # the case is not degenerate
        assert angles[name] == pytest.approx(expected, abs=1e-3)


def test_angle_matches_hand_computation_prototype_loss():
    prototypes = [torch.tensor([[-1.0], [1.0]]), torch.tensor([[0.5], [2.0]])]
    bank = PrototypeBank(2, 2)
    bank.load_state_dict({"prototypes": prototypes, "has_prototype": torch.ones(2, dtype=torch.bool)})
    inputs, labels = tiny_batch()
    angles = gradient_angles(tiny_model(OpaqueConcat), inputs, labels, bank=bank)

    def prototype_derivative(m, i):
        # The prototype logits are -|z - c_k|, so d logit_k / dz = -sign(z - c_k).
        z = embedding(m, i)
        centers = [float(c) for c in prototypes[m].flatten()]
        probabilities = softmax([-abs(z - c) for c in centers])
        return sum((probabilities[k] - (k == LABELS[i])) * -math.copysign(1.0, z - centers[k]) for k in range(2))

    for m in range(2):
        fused = encoder_gradient(m, lambda i: cross_entropy_derivative(fused_logits(i), LABELS[i], m))
        unimodal = encoder_gradient(m, lambda i: prototype_derivative(m, i))
        expected = angle_degrees(fused, unimodal)
        assert 1.0 < expected < 179.0
        assert angles[str(m)] == pytest.approx(expected, abs=1e-3)


def test_one_modality_concat_angle_zero():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))
    model = LateFusionModel([encoder], ConcatFusion([4], 3))
    inputs, labels = (torch.randn(16, 5),), torch.randint(0, 3, (16,))
    angles = gradient_angles(model, inputs, labels, modality_names=["only"])
    assert list(angles) == ["only"]
    assert angles["only"] == pytest.approx(0.0, abs=1e-3)


def test_grad_mode_and_buffers_untouched():
    torch.manual_seed(0)
    encoders = [nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), nn.Linear(2, 3)]
    model = LateFusionModel(encoders, ConcatFusion([3, 3], 2))
    model.train()
    marker = torch.full_like(encoders[0][0].weight, 7.0)
    encoders[0][0].weight.grad = marker.clone()
    running_mean = encoders[0][1].running_mean.clone()
    inputs, labels = (torch.randn(6, 2), torch.randn(6, 2)), torch.tensor([0, 1, 0, 1, 0, 1])

    gradient_angles(model, inputs, labels)

    assert torch.equal(encoders[0][0].weight.grad, marker)
    assert encoders[0][0].bias.grad is None
    assert all(p.grad is None for p in model.fusion.parameters())
    assert torch.equal(encoders[0][1].running_mean, running_mean)
    assert model.training


def test_undecomposable_fusion_needs_bank():
    torch.manual_seed(0)
    model = LateFusionModel([nn.Linear(2, 3), nn.Linear(2, 3)], FiLMFusion([3, 3], 2))
    inputs, labels = (torch.randn(4, 2), torch.randn(4, 2)), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="pass a PrototypeBank"):
        gradient_angles(model, inputs, labels)


def test_frozen_encoder_gives_nan():
    model = tiny_model()
    for parameter in model.encoders[1].parameters():
        parameter.requires_grad_(False)
    inputs, labels = tiny_batch()
    angles = gradient_angles(model, inputs, labels)
    assert math.isfinite(angles["0"])
    assert math.isnan(angles["1"])


def test_epoch_angles_average_batches():
    torch.manual_seed(0)
    model = LateFusionModel([nn.Linear(3, 4), nn.Linear(2, 4)], ConcatFusion([4, 4], 3))
    batches = [((torch.randn(8, 3), torch.randn(8, 2)), torch.randint(0, 3, (8,))) for _ in range(3)]
    per_batch = [gradient_angles(model, inputs, labels, modality_names=["a", "b"]) for inputs, labels in batches]

    averaged = epoch_gradient_angles(model, iter(batches), ["a", "b"])
    assert set(averaged) == {"gradient_angle/a", "gradient_angle/b"}
    for name in ("a", "b"):
        assert averaged[f"gradient_angle/{name}"] == pytest.approx(sum(angles[name] for angles in per_batch) / 3)

    first_two = epoch_gradient_angles(model, iter(batches), ["a", "b"], max_batches=2)
    assert first_two["gradient_angle/a"] == pytest.approx((per_batch[0]["a"] + per_batch[1]["a"]) / 2)
