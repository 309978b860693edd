"""MMTM and CentralNet: gate and combination math by hand, shapes, output fields, and PMR steps on each."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modalbalance.models  # noqa: F401  (registers the encoders and fusions)
import modalbalance.models.centralnet  # noqa: F401  (registers the model)
from modalbalance.data.base import EncoderSpec, TensorMultimodalDataset
from modalbalance.errors import ConfigError
from modalbalance.models.base import ModelOutput
from modalbalance.models.centralnet import CentralBranch, CentralNetModel
from modalbalance.models.mmtm import MMTM, MMTMModel, ResNet18FramesStages, ResNet18Stages, SequentialCNNStages, staged
from modalbalance.models.registry import MODELS
from modalbalance.pmr import PMR

CGMNIST_ENCODERS = (EncoderSpec("cgmnist-cnn", {"in_channels": 1}), EncoderSpec("cgmnist-cnn", {"in_channels": 3}))
AV_ENCODERS = (EncoderSpec("resnet18", {"in_channels": 1}), EncoderSpec("resnet18-frames", {"in_channels": 3}))


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def cgmnist_like(count=6, size=8, num_classes=3):
    inputs = (torch.rand(count, 1, size, size), torch.rand(count, 3, size, size))
    labels = torch.arange(count) % num_classes
    return TensorMultimodalDataset(inputs, labels, ("gray", "colored"), tuple(str(k) for k in range(num_classes)), CGMNIST_ENCODERS)


def audio_visual_like(count=2):
    inputs = (torch.rand(count, 1, 40, 48), torch.rand(count, 2, 3, 32, 32))
    labels = torch.arange(count) % 2
    return TensorMultimodalDataset(inputs, labels, ("audio", "visual"), ("a", "b"), AV_ENCODERS)


# --- MMTM math ----------------------------------------------------------------------


def hand_mmtm():
    """Channels (1, 2), reduction 3: one joint unit. Weights set so the gates are easy to work out."""
    module = MMTM([1, 2], reduction=3)
    with torch.no_grad():
        module.joint.weight.copy_(torch.tensor([[1.0, -1.0, 1.0]]))
        module.joint.bias.zero_()
        module.excitations[0].weight.copy_(torch.tensor([[2.0]]))
        module.excitations[0].bias.copy_(torch.tensor([-3.0]))
        module.excitations[1].weight.copy_(torch.tensor([[1.0], [0.0]]))
        module.excitations[1].bias.copy_(torch.tensor([0.0, -1.0]))
    # Modality 0: one channel over a 2x2 map, mean 2.5. Modality 1: two channels over 2 positions, means 2 and 1.
    features = [torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.tensor([[[1.0, 3.0], [0.0, 2.0]]])]
    return module, features


def test_mmtm_joint_size_uses_reduction():
    module = MMTM([64, 64], reduction=4)
    assert module.joint.out_features == 32
    assert [e.out_features for e in module.excitations] == [64, 64]


def test_mmtm_gates_by_hand():
    module, features = hand_mmtm()
    # Z = relu(2.5 - 2 + 1) = 1.5; E_0 = 2 * 1.5 - 3 = 0; E_1 = (1.5, -1)
    gates = module.gates(features)
    assert gates[0][0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert gates[1][0, 0].item() == pytest.approx(2.0 / (1.0 + math.exp(-1.5)), abs=1e-6)
    assert gates[1][0, 1].item() == pytest.approx(2.0 / (1.0 + math.exp(1.0)), abs=1e-6)


def test_mmtm_output_by_hand():
    module, features = hand_mmtm()
    gated = module(features)
    up, down = 2.0 / (1.0 + math.exp(-1.5)), 2.0 / (1.0 + math.exp(1.0))
    assert torch.equal(gated[0], features[0])
    assert gated[1][0, 0].tolist() == pytest.approx([1.0 * up, 3.0 * up], abs=1e-6)
    assert gated[1][0, 1].tolist() == pytest.approx([0.0, 2.0 * down], abs=1e-6)


def test_mmtm_negative_joint_gives_unit_gates():
    module, features = hand_mmtm()
    with torch.no_grad():
        module.joint.bias.fill_(-10.0)  # Z = relu(1.5 - 10) = 0
        module.excitations[0].bias.zero_()
        module.excitations[1].bias.zero_()
    gated = module(features)
    assert torch.equal(gated[0], features[0])
    assert torch.equal(gated[1], features[1])


def test_mmtm_gate_gradient_reaches_both_inputs():
    module, features = hand_mmtm()
    features = [f.clone().requires_grad_(True) for f in features]
    sum(g.sum() for g in module(features)).backward()
    assert features[0].grad.abs().sum() > 0
    assert features[1].grad.abs().sum() > 0


# --- staged encoders ----------------------------------------------------------


def test_staged_cgmnist_matches_encoder():
    model = MODELS.build("mmtm", cgmnist_like(), 16)
    for encoder, x in zip(model.encoders, cgmnist_like().inputs):
        assert isinstance(encoder, SequentialCNNStages)
        assert encoder.stage_channels == (32, 32, 64, 64)
        torch.testing.assert_close(encoder(x), encoder.encoder(x))


def test_staged_resnet_matches_encoder():
    dataset = audio_visual_like()
    model = MODELS.build("mmtm", dataset, 32).eval()
    assert isinstance(model.encoders[0], ResNet18Stages)
    assert isinstance(model.encoders[1], ResNet18FramesStages)
    with torch.no_grad():
        for encoder, x in zip(model.encoders, dataset.inputs):
            assert encoder.stage_channels == (64, 128, 256, 512)
            torch.testing.assert_close(encoder(x), encoder.encoder(x), rtol=1e-5, atol=1e-6)


def test_staged_small_cnn_matches_encoder():
    small_cnn = pytest.importorskip("modalbalance.models.small_cnn")
    encoder = small_cnn.SmallCNN(in_channels=1, embedding_dim=8, width=4).eval()
    wrapped = staged(encoder, "small-cnn", "mmtm")
    x = torch.rand(3, 1, 20, 12)
    assert isinstance(wrapped, SequentialCNNStages)
    assert wrapped.stage_channels == (4, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), encoder(x))


# --- MMTM model ---------------------------------------------------------------------


def test_mmtm_model_output_fields():
    dataset = cgmnist_like()
    model = MODELS.build("mmtm", dataset, 16)
    output = model(dataset.inputs)
    assert isinstance(output, ModelOutput)
    assert output.logits.shape == (6, 3)
    assert [tuple(z.shape) for z in output.embeddings] == [(6, 16), (6, 16)]
    assert len(output.modality_logits) == 2
    torch.testing.assert_close(output.modality_logits[0] + output.modality_logits[1], output.logits)


def test_mmtm_model_on_mnist_size():
    dataset = cgmnist_like(count=3, size=28)
    output = MODELS.build("mmtm", dataset, 8)(dataset.inputs)
    assert output.logits.shape == (3, 3)


def test_mmtm_placement_defaults():
    cnn = MODELS.build("mmtm", cgmnist_like(), 16)
    resnet = MODELS.build("mmtm", audio_visual_like(), 16)
    assert cnn.fused_stages == (2, 3)
    assert resnet.fused_stages == (1, 2, 3)
    assert [m.channels for m in resnet.mmtm.values()] == [(128, 128), (256, 256), (512, 512)]


def test_mmtm_placement_param():
    model = MODELS.build("mmtm", cgmnist_like(), 16, mmtm_stages=4)
    assert model.fused_stages == (0, 1, 2, 3)


def test_mmtm_exchanges_information():
    dataset = cgmnist_like()
    model = MODELS.build("mmtm", dataset, 16).eval()
    gray, colored = dataset.inputs
    with torch.no_grad():
        first = model((gray, colored)).embeddings[0]
        changed = model((gray, torch.rand_like(colored))).embeddings[0]
    # The gray embedding depends on the colored input only through the MMTM gates.
    assert not torch.allclose(first, changed)


def test_mmtm_resnet_output_shapes():
    dataset = audio_visual_like()
    output = MODELS.build("mmtm", dataset, 512).eval()(dataset.inputs)
    assert output.logits.shape == (2, 2)
    assert [tuple(z.shape) for z in output.embeddings] == [(2, 512), (2, 512)]


def test_mmtm_encoders_group_parameters():
    model = MODELS.build("mmtm", cgmnist_like(), 16)
    groups = [{id(p) for p in encoder.parameters()} for encoder in model.encoders]
    mmtm_ids = {id(p) for p in model.mmtm.parameters()}
    assert isinstance(model.encoders, nn.ModuleList)
    assert groups[0].isdisjoint(groups[1])
    assert mmtm_ids.isdisjoint(groups[0] | groups[1])
    assert len(groups[0]) == len(list(model.encoders[0].encoder.parameters()))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"reduce": 4}, r"unknown model.fusion_params \['reduce'\]"),
        ({"mmtm_stages": 5}, "mmtm_stages between 1 and 4"),
        ({"reduction": 0}, "reduction to be a positive integer"),
        ({"head": "late"}, "head to be one of"),
    ],
)
def test_mmtm_rejects_invalid_params(params, message):
    with pytest.raises(ConfigError, match=message):
        MODELS.build("mmtm", cgmnist_like(), 16, **params)


def test_mmtm_rejects_unsupported_encoder():
    with pytest.raises(ConfigError, match="encoder 'linear' is not supported"):
        staged(nn.Linear(4, 2), "linear", "mmtm")


# --- CentralNet ---------------------------------------------------------------------


def test_central_branch_combination_by_hand():
    branch = CentralBranch(num_modalities=2, stage_channels=(2, 1), embedding_dim=2, num_classes=2)
    with torch.no_grad():
        branch.modality_weights.copy_(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
        branch.central_weights.copy_(torch.tensor([9.0, 3.0]))
        branch.layers[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        branch.layers[0].bias.copy_(torch.tensor([0.5]))
    # c1 = 1 * (1, 2) + 2 * (3, -1) = (7, 0)
    first = branch.combine(0, None, [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])])
    assert first.tolist() == [[7.0, 0.0]]
    # c2 = 3 * relu(7 - 0 + 0.5) + 0.5 * 4 - 1 * 1 = 23.5
    second = branch.combine(1, first, [torch.tensor([[4.0]]), torch.tensor([[1.0]])])
    assert second.tolist() == [[23.5]]


def test_central_branch_weights_start_at_one():
    branch = CentralBranch(num_modalities=2, stage_channels=(32, 32, 64, 64), embedding_dim=8, num_classes=3)
    assert torch.equal(branch.modality_weights, torch.ones(4, 2))
    assert torch.equal(branch.central_weights, torch.ones(4))
    assert [(layer.in_features, layer.out_features) for layer in branch.layers] == [(32, 32), (32, 64), (64, 64)]


def test_centralnet_output_fields():
    dataset = cgmnist_like()
    model = MODELS.build("centralnet", dataset, 16)
    output = model(dataset.inputs)
    assert isinstance(model, CentralNetModel)
    assert output.logits.shape == (6, 3)
    assert [tuple(z.shape) for z in output.embeddings] == [(6, 16), (6, 16)]
    assert [tuple(l.shape) for l in output.modality_logits] == [(6, 3), (6, 3)]
    torch.testing.assert_close(output.modality_logits[1], model.heads[1](output.embeddings[1]))


def test_centralnet_embeddings_are_the_streams_own():
    dataset = cgmnist_like()
    model = MODELS.build("centralnet", dataset, 16)
    output = model(dataset.inputs)
    for encoder, x, z in zip(model.encoders, dataset.inputs, output.embeddings):
        torch.testing.assert_close(z, encoder.encoder(x))


def test_centralnet_auxiliary_loss_by_definition():
    dataset = cgmnist_like()
    model = MODELS.build("centralnet", dataset, 16, unimodal_loss_weight=0.5)
    output = model(dataset.inputs)
    expected = 0.5 * (F.cross_entropy(output.modality_logits[0], dataset.labels) + F.cross_entropy(output.modality_logits[1], dataset.labels))
    assert model.auxiliary_loss(output, dataset.labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_centralnet_resnet_output_shapes():
    dataset = audio_visual_like()
    output = MODELS.build("centralnet", dataset, 64).eval()(dataset.inputs)
    assert output.logits.shape == (2, 2)
    assert [tuple(z.shape) for z in output.embeddings] == [(2, 64), (2, 64)]


def test_centralnet_rejects_unknown_param():
    with pytest.raises(ConfigError, match=r"unknown model.fusion_params \['weights'\]"):
        MODELS.build("centralnet", cgmnist_like(), 16, weights=1)


def test_centralnet_rejects_mismatched_stages():
    dataset = cgmnist_like()
    dataset.default_encoders = (EncoderSpec("cgmnist-cnn", {"in_channels": 1}), EncoderSpec("resnet18", {"in_channels": 3}))
    with pytest.raises(ConfigError, match="same channel counts"):
        MODELS.build("centralnet", dataset, 16)


# --- PMR on each --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mmtm", "centralnet"])
def test_pmr_step_runs(name):
    dataset = cgmnist_like(count=12)
    model = MODELS.build(name, dataset, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pmr = PMR(num_classes=3, num_modalities=2, alpha=1.0, mu=0.01, per_epochs=1)
    labels = dataset.labels

    pmr.update_prototypes([(dataset.inputs, labels)], lambda inputs: model(inputs).embeddings, module=model)
    output = model(dataset.inputs)
    terms = pmr.loss(output.embeddings, labels, epoch=0)
    loss = F.cross_entropy(output.logits, labels) + terms.loss
    if hasattr(model, "auxiliary_loss"):
        loss = loss + model.auxiliary_loss(output, labels)
    before = [p.detach().clone() for p in model.encoders[0].parameters()]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss)
    assert terms.cross_entropy.shape == (2,)
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.encoders[0].parameters()))


@pytest.mark.parametrize("name", ["mmtm", "centralnet"])
def test_pmr_run_with_intermediate_fusion(name, tmp_path):
    from modalbalance.training.runner import train

    config = {
        "data": {"name": "digits", "train_size": 150, "test_size": 60},
        "model": {"fusion": name, "embedding_dim": 16},
        "method": {"name": "pmr"},
        "train": {"epochs": 1, "progress": False, "checkpoint": False, "missing_class": "top-up"},
    }
    summary = train(config, tmp_path / "run")
    assert summary["fusion"] == name
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert set(summary["modality_test_accuracy"]) == {"gray", "colored"}


def test_mmtm_model_type():
    assert isinstance(MODELS.build("mmtm", cgmnist_like(), 16), MMTMModel)
