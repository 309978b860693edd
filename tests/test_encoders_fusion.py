"""Tests for the CG-MNIST encoder and the concat, sum, FiLM and gated fusion heads."""

from __future__ import annotations

import pytest
import torch

from modalbalance.errors import ConfigError
from modalbalance.models.base import LateFusionModel
from modalbalance.models.encoders import CGMNISTEncoder
from modalbalance.models.fusion import ConcatFusion, FiLMFusion, GatedFusion, SumFusion
from modalbalance.models.registry import ENCODERS, FUSIONS


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 28), (1, 8), (3, 8)])
def test_encoder_output_shape(in_channels, size):
    encoder = CGMNISTEncoder(in_channels=in_channels, embedding_dim=16)

    embeddings = encoder(torch.rand(5, in_channels, size, size))

    assert embeddings.shape == (5, 16)
    assert torch.isfinite(embeddings).all()


def test_encoder_default_embedding_dim():
    encoder = ENCODERS.build("cgmnist-cnn", in_channels=3)

    assert encoder(torch.rand(2, 3, 28, 28)).shape == (2, 512)


def test_encoder_layers_match_paper():
    encoder = CGMNISTEncoder(in_channels=3, embedding_dim=512)
    convs = [module for module in encoder.modules() if isinstance(module, torch.nn.Conv2d)]

    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 32, (5, 5), (1, 1)),
        (32, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (2, 2)),
        (64, 64, (3, 3), (1, 1)),
    ]
    assert encoder.projection.in_features == 64
    assert encoder.projection.out_features == 512


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 3}, r"unknown arguments \['channels'\]"),
        ({"in_channels": 0}, "in_channels to be a positive integer"),
        ({"embedding_dim": -4}, "embedding_dim to be a positive integer"),
    ],
)
def test_encoder_builder_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ENCODERS.build("cgmnist-cnn", **kwargs)


def test_concat_split_hand_computed():
    # Weight 2x(2+1): columns 0-1 multiply modality 0, column 2 modality 1.
    fusion = ConcatFusion([2, 1], num_classes=2)
    with torch.no_grad():
        fusion.classifier.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        fusion.classifier.bias.copy_(torch.tensor([10.0, 20.0]))
    embeddings = (torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0]]))

    logits = fusion(embeddings)
    gray_logits, colored_logits = fusion.modality_logits(embeddings)

    # Fused: [1+2+6+10, 4+5+12+20]. Each modality gets half of the bias.
    torch.testing.assert_close(logits, torch.tensor([[19.0, 41.0]]))
    torch.testing.assert_close(gray_logits, torch.tensor([[1.0 + 2.0 + 5.0, 4.0 + 5.0 + 10.0]]))
    torch.testing.assert_close(colored_logits, torch.tensor([[6.0 + 5.0, 12.0 + 10.0]]))


@pytest.mark.parametrize("name", ["concat", "sum"])
@pytest.mark.parametrize("embedding_dims", [[4, 6], [3], [5, 2, 7]])
def test_late_fusion_logits_sum_to_fused(name, embedding_dims):
    fusion = FUSIONS.build(name, embedding_dims, 3)
    embeddings = tuple(torch.randn(8, dim) for dim in embedding_dims)

    logits = fusion(embeddings)
    parts = fusion.modality_logits(embeddings)

    assert logits.shape == (8, 3)
    assert len(parts) == len(embeddings)
    torch.testing.assert_close(torch.stack(parts).sum(dim=0), logits)


def test_sum_modality_logits_are_each_linear_output():
    fusion = SumFusion([4, 6], num_classes=3)
    embeddings = (torch.randn(5, 4), torch.randn(5, 6))

    parts = fusion.modality_logits(embeddings)

    for classifier, z, part in zip(fusion.classifiers, embeddings, parts):
        torch.testing.assert_close(part, classifier(z))
    torch.testing.assert_close(fusion(embeddings), parts[0] + parts[1])


def test_concat_modality_logits_carry_gradients_to_own_embedding():
    fusion = ConcatFusion([4, 6], num_classes=3)
    embeddings = (torch.randn(5, 4, requires_grad=True), torch.randn(5, 6, requires_grad=True))

    fusion.modality_logits(embeddings)[0].sum().backward()

    assert embeddings[0].grad is not None
    assert embeddings[1].grad is None


@pytest.mark.parametrize("name", ["film", "gated"])
@pytest.mark.parametrize("index", [0, 1])
def test_intermediate_fusion_shapes(name, index):
    argument = {"film": "condition_on", "gated": "gate"}[name]
    fusion = FUSIONS.build(name, [5, 7], 3, **{argument: index})
    embeddings = (torch.randn(4, 5), torch.randn(4, 7))

    logits = fusion(embeddings)

    assert logits.shape == (4, 3)
    assert fusion.modality_logits(embeddings) is None


def test_film_applies_gamma_and_beta():
    # The conditioning modality 1 yields gamma = 2 and beta = 1 whatever its embedding.
    fusion = FiLMFusion([3, 4], num_classes=2, condition_on=1)
    with torch.no_grad():
        fusion.film_generator.weight.zero_()
        fusion.film_generator.bias.copy_(torch.tensor([2.0, 2.0, 2.0, 1.0, 1.0, 1.0]))
    x = torch.randn(6, 3)

    logits = fusion((x, torch.randn(6, 4)))

    torch.testing.assert_close(logits, fusion.classifier(2.0 * x + 1.0))


def test_film_condition_on_zero_modulates_modality_one():
    fusion = FiLMFusion([3, 4], num_classes=2, condition_on=0)

    assert fusion.film_generator.in_features == 3
    assert fusion.film_generator.out_features == 8
    assert fusion.classifier.in_features == 4


def test_gated_multiplies_by_sigmoid_gate():
    # A zero gate projection gives sigmoid(0) = 0.5 for every unit.
    fusion = GatedFusion([3, 4], num_classes=2, gate=1, hidden_dim=6)
    with torch.no_grad():
        fusion.gate_projection.weight.zero_()
        fusion.gate_projection.bias.zero_()
    x = torch.randn(6, 3)

    logits = fusion((x, torch.randn(6, 4)))

    torch.testing.assert_close(logits, fusion.classifier(0.5 * fusion.gated_projection(x)))


@pytest.mark.parametrize("name", ["film", "gated"])
@pytest.mark.parametrize("embedding_dims", [[8], [8, 8, 8]])
def test_intermediate_fusion_needs_two_modalities(name, embedding_dims):
    with pytest.raises(ConfigError, match=f"fusion '{name}' needs exactly two modalities; got {len(embedding_dims)}"):
        FUSIONS.build(name, embedding_dims, 3)


@pytest.mark.parametrize(("name", "argument"), [("film", "condition_on"), ("gated", "gate")])
def test_intermediate_fusion_rejects_bad_index(name, argument):
    with pytest.raises(ConfigError, match=f"{argument} to be 0 or 1"):
        FUSIONS.build(name, [4, 4], 3, **{argument: 2})


@pytest.mark.parametrize(
    ("name", "embedding_dims", "num_classes", "kwargs", "message"),
    [
        ("concat", [], 3, {}, "one positive embedding dim per modality"),
        ("sum", [4, 0], 3, {}, "one positive embedding dim per modality"),
        ("concat", [4, 4], 0, {}, "num_classes to be a positive integer"),
        ("sum", [4, 4], 3, {"hidden_dim": 8}, r"unknown arguments \['hidden_dim'\]"),
        ("gated", [4, 4], 3, {"hidden_dim": 0}, "hidden_dim to be a positive integer"),
    ],
)
def test_fusion_rejects_invalid_arguments(name, embedding_dims, num_classes, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FUSIONS.build(name, embedding_dims, num_classes, **kwargs)


def test_fusion_rejects_wrong_embedding_count():
    fusion = ConcatFusion([4, 4], num_classes=3)

    with pytest.raises(ValueError, match="got 1 embeddings for a fusion built for 2 modalities"):
        fusion((torch.randn(2, 4),))


def test_late_fusion_model_with_cgmnist_encoders():
    encoders = [ENCODERS.build("cgmnist-cnn", 32, in_channels=1), ENCODERS.build("cgmnist-cnn", 32, in_channels=3)]
    model = LateFusionModel(encoders, FUSIONS.build("concat", [32, 32], 10))

    output = model((torch.rand(3, 1, 8, 8), torch.rand(3, 3, 8, 8)))

    assert output.logits.shape == (3, 10)
    assert [z.shape for z in output.embeddings] == [(3, 32), (3, 32)]
    torch.testing.assert_close(output.modality_logits[0] + output.modality_logits[1], output.logits)
