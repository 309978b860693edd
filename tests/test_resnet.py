"""ResNet18 encoders and the small CNN: shapes, parameter counts and argument checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modalbalance.errors import ConfigError
from modalbalance.models import resnet, small_cnn  # noqa: F401  (registers the encoders)
from modalbalance.models.registry import ENCODERS
from modalbalance.models.resnet import ResNet18, ResNet18Encoder, ResNet18FramesEncoder

torch.set_num_threads(1)

# torchvision's resnet18 has 11,689,512 parameters; its 512 x 1000 fc layer has 513,000 of them.
RESNET18_PARAMETERS_WITHOUT_HEAD = 11_689_512 - 513_000


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_resnet18_parameter_count_matches_standard():
    assert count_parameters(ResNet18(in_channels=3)) == RESNET18_PARAMETERS_WITHOUT_HEAD == 11_176_512


def test_resnet18_one_channel_stem_is_only_difference():
    # The 7x7 stem convolution has 64 * in_channels * 49 weights; nothing else depends on in_channels.
    assert count_parameters(ResNet18(in_channels=1)) == 11_176_512 - 64 * 2 * 49


def test_resnet18_layout():
    network = ResNet18(in_channels=3)
    assert [len(stage) for stage in (network.layer1, network.layer2, network.layer3, network.layer4)] == [2, 2, 2, 2]
    widths = [stage[-1].conv2.out_channels for stage in (network.layer1, network.layer2, network.layer3, network.layer4)]
    assert widths == [64, 128, 256, 512]
    stem = network.stem[0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((7, 7), (2, 2), (3, 3))
    assert isinstance(network.stem[3], nn.MaxPool2d)


def test_resnet18_feature_map_downsamples_by_32():
    network = ResNet18(in_channels=1).eval()
    with torch.no_grad():
        features = network.forward_features(torch.randn(1, 1, 64, 96))
    assert features.shape == (1, 512, 2, 3)


def test_spectrogram_encoder_output_shape():
    encoder = ENCODERS.build("resnet18", in_channels=1)
    assert isinstance(encoder, ResNet18Encoder)
    assert encoder(torch.randn(2, 1, 65, 75)).shape == (2, 512)


def test_spectrogram_encoder_full_cremad_input():
    encoder = ENCODERS.build("resnet18", in_channels=1).eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 1, 257, 299)).shape == (1, 512)


def test_frames_encoder_output_shape():
    encoder = ENCODERS.build("resnet18-frames", in_channels=3)
    assert isinstance(encoder, ResNet18FramesEncoder)
    assert encoder(torch.randn(2, 3, 3, 32, 32)).shape == (2, 512)


def test_frames_encoder_averages_over_time_and_space():
    torch.manual_seed(0)
    encoder = ENCODERS.build("resnet18-frames", in_channels=3).eval()
    frames = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        expected = encoder.backbone.forward_features(frames[0]).mean(dim=(0, 2, 3))
        embedding = encoder(frames)[0]
    torch.testing.assert_close(embedding, expected)


def test_frames_encoder_repeated_frame_equals_single_frame():
    torch.manual_seed(0)
    encoder = ENCODERS.build("resnet18-frames", in_channels=3).eval()
    frame = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        single = encoder.backbone(frame)
        repeated = encoder(frame[:, None].expand(1, 3, 3, 64, 64))
    torch.testing.assert_close(repeated, single)


@pytest.mark.parametrize("name, shape", [("resnet18", (2, 1, 64, 64)), ("resnet18-frames", (2, 2, 1, 64, 64))])
def test_projection_when_embedding_dim_differs(name, shape):
    encoder = ENCODERS.build(name, embedding_dim=128, in_channels=1)
    assert isinstance(encoder.projection, nn.Linear)
    assert encoder(torch.randn(*shape)).shape == (2, 128)


@pytest.mark.parametrize("name", ["resnet18", "resnet18-frames"])
def test_no_projection_at_512(name):
    assert isinstance(ENCODERS.build(name).projection, nn.Identity)


def test_default_channels():
    assert ENCODERS.build("resnet18").backbone.in_channels == 1
    assert ENCODERS.build("resnet18-frames").backbone.in_channels == 3


def test_gradients_reach_the_stem():
    encoder = ENCODERS.build("resnet18-frames", in_channels=3)
    encoder(torch.randn(2, 2, 3, 32, 32)).sum().backward()
    assert encoder.backbone.stem[0].weight.grad is not None
    assert encoder.backbone.stem[0].weight.grad.abs().sum() > 0


def test_kaiming_init_of_convolutions():
    torch.manual_seed(0)
    conv = ResNet18(in_channels=3).layer4[0].conv1
    # Kaiming normal, fan-out mode: std = sqrt(2 / (out_channels * 3 * 3)).
    expected_std = (2.0 / (512 * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.02)


@pytest.mark.parametrize("name, shape", [("resnet18", (2, 1, 8, 8, 8)), ("resnet18-frames", (2, 1, 8, 8))])
def test_wrong_input_rank_raises(name, shape):
    with pytest.raises(ValueError, match="expects"):
        ENCODERS.build(name)(torch.randn(*shape))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 3}, "unknown arguments"),
        ({"in_channels": 0}, "in_channels to be a positive integer"),
        ({"in_channels": True}, "in_channels to be a positive integer"),
        ({"embedding_dim": 0}, "embedding_dim to be a positive integer"),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ENCODERS.build("resnet18", **kwargs)


def test_small_cnn_shapes():
    encoder = ENCODERS.build("small-cnn", embedding_dim=64, in_channels=1, width=8)
    assert encoder(torch.randn(3, 1, 129, 62)).shape == (3, 64)
    assert encoder(torch.randn(3, 1, 28, 28)).shape == (3, 64)


def test_small_cnn_rejects_unknown_argument():
    with pytest.raises(ConfigError, match="small-cnn"):
        ENCODERS.build("small-cnn", depth=4)
