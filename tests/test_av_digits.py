"""Audio-visual digits on the real MNIST and Free Spoken Digit data: splits, pairing and a short PMR run."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from modalbalance.data import av_digits  # noqa: F401  (registers the data set)
from modalbalance.data.av_digits import DEFAULT_TEST_SPEAKER, TEST_TAKES
from modalbalance.data.idx import load_mnist
from modalbalance.data.registry import DATASETS
from modalbalance.errors import ConfigError, DataError

torch.set_num_threads(1)
SPEAKERS = {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}


def build(root, split, seed=0, **params):
    return DATASETS.build("av-digits", root, split, seed, **params)


def test_default_sizes(data_root):
    assert len(build(data_root, "train")) == 2700 * 4
    assert len(build(data_root, "test")) == 300 * 4


def test_pairs_per_clip(data_root):
    dataset = build(data_root, "train", pairs_per_clip=2)
    assert len(dataset) == 5400
    assert torch.equal(torch.bincount(dataset.clip_index), torch.full((2700,), 2))


def test_batch_shapes_and_ranges(data_root):
    dataset = build(data_root, "train")
    (audio, image), labels = dataset.get_batch(list(range(0, 10800, 1000)))
    assert audio.shape == (11, 1, 129, 62)
    assert image.shape == (11, 1, 28, 28)
    assert audio.dtype == image.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert image.min() >= 0.0
    assert image.max() <= 1.0


def test_getitem_matches_get_batch(data_root):
    dataset = build(data_root, "test")
    (audio, image), labels = dataset.get_batch([7, 300])
    for row, index in enumerate((7, 300)):
        (single_audio, single_image), label = dataset[index]
        torch.testing.assert_close(single_audio, audio[row])
        torch.testing.assert_close(single_image, image[row])
        assert label == int(labels[row])


def test_contract_attributes(data_root):
    dataset = build(data_root, "test")
    assert dataset.modality_names == ("audio", "image")
    assert dataset.class_names == tuple("0123456789")
    assert [spec.name for spec in dataset.default_encoders] == ["small-cnn", "small-cnn"]


def test_images_show_the_clip_digit(data_root):
    train_images, train_labels, test_images, test_labels = load_mnist(data_root / "mnist")
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        dataset = build(data_root, split)
        np.testing.assert_array_equal(labels[dataset.mnist_index.numpy()], dataset.labels.numpy())
        first = dataset.mnist_index[0].item()
        torch.testing.assert_close(dataset[0][0][1][0], torch.tensor(images[first]).float() / 255)


def test_images_not_reused_within_a_split(data_root):
    # 1,080 train pairs per digit draw from about 6,000 MNIST images of that digit, without repeats.
    dataset = build(data_root, "train")
    assert dataset.mnist_index.unique().numel() == len(dataset)


def test_take_split_separates_takes(data_root):
    train, test = build(data_root, "train"), build(data_root, "test")
    assert set(train.takes.tolist()) == set(range(5, 50))
    assert set(test.takes.tolist()) == set(TEST_TAKES)
    assert set(train.speakers.tolist()) == set(test.speakers.tolist()) == SPEAKERS


def test_speaker_split_holds_out_default_speaker(data_root):
    train = build(data_root, "train", split_by="speaker")
    test = build(data_root, "test", split_by="speaker")
    assert DEFAULT_TEST_SPEAKER == "george"
    assert DEFAULT_TEST_SPEAKER not in set(train.speakers.tolist())
    assert set(test.speakers.tolist()) == {DEFAULT_TEST_SPEAKER}
    assert len(train) == 2500 * 4
    assert len(test) == 500 * 4


def test_speaker_split_other_speaker(data_root):
    train = build(data_root, "train", split_by="speaker", test_speaker="theo")
    test = build(data_root, "test", split_by="speaker", test_speaker="theo")
    assert "theo" not in set(train.speakers.tolist())
    assert set(test.speakers.tolist()) == {"theo"}


def test_same_seed_same_pairs(data_root):
    first, again = build(data_root, "train", seed=3), build(data_root, "train", seed=3)
    assert torch.equal(first.mnist_index, again.mnist_index)
    assert torch.equal(first.clip_index, again.clip_index)
    torch.testing.assert_close(first.get_batch([5, 99])[0][0], again.get_batch([5, 99])[0][0])


def test_other_seed_other_pairs(data_root):
    first, other = build(data_root, "train", seed=0), build(data_root, "train", seed=1)
    assert not torch.equal(first.mnist_index, other.mnist_index)
    assert torch.equal(first.labels, other.labels)


def test_audio_standardized_with_train_statistics(data_root):
    train = build(data_root, "train")
    assert train.spectrograms.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert train.spectrograms.std().item() == pytest.approx(1.0, abs=1e-4)
    # The test clips use the train statistics, so their mean is close to, not exactly, zero.
    assert build(data_root, "test").spectrograms.mean().item() != pytest.approx(0.0, abs=1e-6)


def test_val_split_disjoint_from_train(data_root):
    train = build(data_root, "train", val_fraction=0.1)
    val = build(data_root, "val", val_fraction=0.1)
    assert len(val) == 270 * 4
    assert len(train) == 2430 * 4
    train_clips = set(zip(train.speakers.tolist(), train.takes.tolist(), train.labels.tolist()))
    val_clips = set(zip(val.speakers.tolist(), val.takes.tolist(), val.labels.tolist()))
    assert not train_clips & val_clips
    assert not set(train.mnist_index.tolist()) & set(val.mnist_index.tolist())


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"split_by": "actor"}, ConfigError, "split_by must be one of take, speaker"),
        ({"split_by": "speaker", "test_speaker": "alice"}, ConfigError, "test_speaker must be one of george, jackson"),
        ({"pairs_per_clip": 0}, ConfigError, "pairs_per_clip must be a positive integer"),
        ({"val_fraction": -0.1}, ConfigError, "val_fraction must be a number"),
        ({"pairs": 2}, ConfigError, "unknown params \\['pairs'\\]"),
    ],
)
def test_invalid_params_raise(data_root, params, error, message):
    with pytest.raises(error, match=message):
        build(data_root, "train", **params)


def test_val_without_fraction_raises(data_root):
    with pytest.raises(ConfigError, match="val_fraction > 0"):
        build(data_root, "val")


def test_missing_root_raises():
    with pytest.raises(ConfigError, match="needs data.root"):
        build(None, "train")


def test_missing_recordings_raise(tmp_path):
    with pytest.raises(DataError, match="FSDD recordings directory not found"):
        build(tmp_path, "train")


# A short training run: PMR should lift the slow (audio) modality over naive joint training.


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("modalbalance.training.runner") is None, reason="trainer not installed")
def test_pmr_lifts_slow_audio_over_naive(data_root, tmp_path):
    from modalbalance.models import small_cnn  # noqa: F401  (registers the encoder)
    from modalbalance.training.config import load_config
    from modalbalance.training.runner import train

    # Small encoders, one pair per clip and Adam keep two runs of two epochs within about 30 s of CPU.
    # The image branch reaches about 90% in the first epoch and then dominates the fused loss.
    overrides = [
        f"data.root={data_root}",
        "data.pairs_per_clip=1",
        "model.embedding_dim=64",
        "model.encoders=[{name: small-cnn, width: 8}, {name: small-cnn, width: 8}]",
        "optimizer.name=adam",
        "optimizer.lr=0.001",
        "train.epochs=2",
        "train.progress=false",
        "train.checkpoint=false",
    ]
    naive = train(load_config("av_digits/naive_concat", overrides), tmp_path / "naive")
    pmr = train(load_config("av_digits/pmr_concat", overrides), tmp_path / "pmr")

    assert naive["modality_test_accuracy"]["image"] > naive["modality_test_accuracy"]["audio"]
    assert pmr["modality_test_accuracy"]["audio"] > naive["modality_test_accuracy"]["audio"] + 0.05
    assert pmr["test_accuracy"] >= naive["test_accuracy"] - 0.03
