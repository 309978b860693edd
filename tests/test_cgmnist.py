"""Tests for Colored-and-Gray MNIST: the color construction and the cgmnist and digits builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalbalance.data import idx
from modalbalance.data.base import EncoderSpec
from modalbalance.data.cgmnist import PALETTES, make_colored_gray, resolve_palette
from modalbalance.data.registry import DATASETS
from modalbalance.errors import ConfigError, DataError
from test_idx import write_fake_mnist

# Ten distinct colors, each channel a multiple of 1/4, so that colors are exact in float32.
DISTINCT_PALETTE = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [1.0, 0.0, 1.0],
        [0.0, 1.0, 1.0],
        [1.0, 1.0, 1.0],
        [0.5, 0.25, 0.0],
        [0.0, 0.5, 0.25],
        [0.25, 0.0, 0.5],
    ]
)
MID_GRAY_PALETTE = np.full((10, 3), 0.5)


def random_digits(num_samples: int, size: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_samples, size, size), dtype=np.uint8)
    images[:, 0, :] = 0  # a black background row
    images[:, 1, 1] = 255  # one full-intensity pixel
    labels = np.arange(num_samples) % 10
    return images, labels


def palette_index_of(colored: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Recover each sample's palette index from its full-intensity pixel at (1, 1); needs zero jitter."""
    colors = colored[:, :, 1, 1]
    distances = np.abs(colors[:, None, :] - palette[None, :, :].astype(np.float32)).sum(axis=2)
    assert np.all(distances.min(axis=1) == 0)
    return distances.argmin(axis=1)


def test_gray_equals_digit():
    images, labels = random_digits(12)

    gray, colored = make_colored_gray(images, labels, "train", DISTINCT_PALETTE, 0.03, np.random.default_rng(0))

    assert gray.shape == (12, 1, 6, 6)
    assert gray.dtype == np.float32
    np.testing.assert_array_equal(gray[:, 0], images.astype(np.float32) / np.float32(255))


def test_train_color_is_palette_of_label_without_jitter():
    images, labels = random_digits(20)

    gray, colored = make_colored_gray(images, labels, "train", DISTINCT_PALETTE, 0.0, np.random.default_rng(0))

    assert colored.shape == (20, 3, 6, 6)
    assert colored.dtype == np.float32
    expected = gray * DISTINCT_PALETTE[labels].astype(np.float32)[:, :, None, None]
    np.testing.assert_array_equal(colored, expected)
    np.testing.assert_array_equal(colored[:, :, 1, 1], DISTINCT_PALETTE[labels].astype(np.float32))


def test_background_stays_black_with_jitter():
    images, labels = random_digits(50)

    _, colored = make_colored_gray(images, labels, "test", MID_GRAY_PALETTE, 0.5, np.random.default_rng(0))

    background = np.broadcast_to((images == 0)[:, None], colored.shape)
    assert np.all(colored[background] == 0)


def test_colored_is_one_color_times_gray():
    images, labels = random_digits(30)

    gray, colored = make_colored_gray(images, labels, "train", MID_GRAY_PALETTE, 0.03, np.random.default_rng(1))

    colors = colored[:, :, 1, 1]
    np.testing.assert_allclose(colored, gray * colors[:, :, None, None], rtol=1e-6)


def test_jitter_has_requested_variance():
    # A mid-gray palette keeps the jittered colors away from the clipping bounds.
    images, labels = random_digits(20000, size=2)
    variance = 0.01

    _, colored = make_colored_gray(images, labels, "train", MID_GRAY_PALETTE, variance, np.random.default_rng(0))

    jitter = colored[:, :, 1, 1] - 0.5
    assert abs(jitter.mean()) < 0.005
    np.testing.assert_allclose(jitter.var(axis=0), variance, rtol=0.05)


def test_jittered_colors_are_clipped():
    images, labels = random_digits(500)

    _, colored = make_colored_gray(images, labels, "train", DISTINCT_PALETTE, 1.0, np.random.default_rng(0))

    assert colored.min() == 0.0
    assert colored.max() == 1.0


def test_test_colors_independent_of_labels():
    images, labels = random_digits(2000)

    _, colored = make_colored_gray(images, labels, "test", DISTINCT_PALETTE, 0.0, np.random.default_rng(0))

    palette_indices = palette_index_of(colored, DISTINCT_PALETTE)
    for digit in range(10):
        assert len(np.unique(palette_indices[labels == digit])) >= 8
    assert len(np.unique(palette_indices)) == 10
    assert 0.05 < np.mean(palette_indices == labels) < 0.15


def test_float_images_are_used_as_intensity():
    images = np.array([[[0.0, 0.5], [0.25, 1.0]]], dtype=np.float32)

    gray, colored = make_colored_gray(images, np.array([2]), "train", DISTINCT_PALETTE, 0.0, np.random.default_rng(0))

    np.testing.assert_array_equal(gray[0, 0], images[0])
    np.testing.assert_array_equal(colored[0, 2], images[0])
    np.testing.assert_array_equal(colored[0, :2], np.zeros((2, 2, 2), dtype=np.float32))


@pytest.mark.parametrize("split", ["train", "test"])
def test_make_colored_gray_is_seeded(split):
    images, labels = random_digits(40)

    first = make_colored_gray(images, labels, split, DISTINCT_PALETTE, 0.03, np.random.default_rng(7))
    again = make_colored_gray(images, labels, split, DISTINCT_PALETTE, 0.03, np.random.default_rng(7))
    other = make_colored_gray(images, labels, split, DISTINCT_PALETTE, 0.03, np.random.default_rng(8))

    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize(
    ("palette", "jitter_variance", "split", "message"),
    [
        (np.zeros((9, 3)), 0.0, "train", r"shape \[10, 3\]"),
        (np.full((10, 3), 1.5), 0.0, "train", r"in \[0, 1\]"),
        (DISTINCT_PALETTE, -0.1, "train", "jitter_variance must be a number >= 0"),
        (DISTINCT_PALETTE, float("nan"), "train", "jitter_variance must be a number >= 0"),
        (DISTINCT_PALETTE, 0.0, "val", "split must be one of train, test"),
    ],
)
def test_make_colored_gray_rejects_invalid_arguments(palette, jitter_variance, split, message):
    images, labels = random_digits(4)

    with pytest.raises(ConfigError, match=message):
        make_colored_gray(images, labels, split, palette, jitter_variance, np.random.default_rng(0))


def test_named_palettes_are_valid():
    assert {"default", "saturated"} <= set(PALETTES)
    for name in PALETTES:
        palette = resolve_palette(name)
        assert palette.shape == (10, 3)
        assert palette.min() >= 0.0
        assert palette.max() <= 1.0
        assert len(np.unique(palette, axis=0)) == 10


def test_default_palette_less_separated_than_saturated():
    def min_pairwise_distance(palette):
        distances = np.linalg.norm(palette[:, None] - palette[None], axis=2)
        return distances[~np.eye(10, dtype=bool)].min()

    assert min_pairwise_distance(PALETTES["default"]) < min_pairwise_distance(PALETTES["saturated"])


def test_resolve_palette_unknown_name_lists_choices():
    with pytest.raises(ConfigError, match="palette must be one of .*default.*saturated.*; got 'pastel'"):
        resolve_palette("pastel")


def test_resolve_palette_accepts_list():
    palette = resolve_palette(DISTINCT_PALETTE.tolist())

    np.testing.assert_array_equal(palette, DISTINCT_PALETTE)


def test_digits_builder_shapes_and_sizes():
    train = DATASETS.build("digits", None, "train", 0)
    test = DATASETS.build("digits", None, "test", 0)

    assert len(train) == 1437
    assert len(test) == 360
    gray, colored = train.inputs
    assert gray.shape == (1437, 1, 8, 8)
    assert colored.shape == (1437, 3, 8, 8)
    assert gray.dtype == torch.float32
    assert colored.dtype == torch.float32
    assert train.labels.dtype == torch.int64
    assert train.modality_names == ("gray", "colored")
    assert train.class_names == tuple(str(digit) for digit in range(10))
    assert train.default_encoders == (
        EncoderSpec("cgmnist-cnn", {"in_channels": 1}),
        EncoderSpec("cgmnist-cnn", {"in_channels": 3}),
    )


def test_digits_gray_scaled_to_unit_range():
    gray = DATASETS.build("digits", None, "train", 0).inputs[0]

    assert gray.min() == 0.0
    assert gray.max() == 1.0
    torch.testing.assert_close(gray * 16, torch.round(gray * 16))


def test_digits_split_is_stratified_and_disjoint():
    train = DATASETS.build("digits", None, "train", 0)
    test = DATASETS.build("digits", None, "test", 0)

    test_counts = torch.bincount(test.labels, minlength=10)
    assert test_counts.min() >= 35
    assert test_counts.max() <= 37
    # scikit-learn's 1,797 digits contain no duplicate images, so no test image may appear in train.
    train_images = {tuple(row) for row in train.inputs[0].flatten(1).tolist()}
    shared = sum(tuple(row) in train_images for row in test.inputs[0].flatten(1).tolist())
    assert shared == 0


def test_digits_palette_indices_per_split():
    train = DATASETS.build("digits", None, "train", 0)
    test = DATASETS.build("digits", None, "test", 0)

    assert torch.equal(train.palette_indices, train.labels)
    assert (test.palette_indices == test.labels).float().mean() < 0.25
    assert len(torch.unique(test.palette_indices)) == 10


def test_digits_seeds():
    first = DATASETS.build("digits", None, "test", 3)
    again = DATASETS.build("digits", None, "test", 3)
    other = DATASETS.build("digits", None, "test", 4)

    assert torch.equal(first.inputs[1], again.inputs[1])
    assert not torch.equal(first.inputs[1], other.inputs[1])
    # The split does not depend on the seed, only the colors do.
    assert torch.equal(first.inputs[0], other.inputs[0])


def test_digits_test_colors_build_order():
    alone = DATASETS.build("digits", None, "test", 5)
    DATASETS.build("digits", None, "train", 5)
    after_train = DATASETS.build("digits", None, "test", 5)

    assert torch.equal(alone.inputs[1], after_train.inputs[1])


def test_digits_subset_sizes():
    train = DATASETS.build("digits", None, "train", 0, train_size=100, test_size=50)
    test = DATASETS.build("digits", None, "test", 0, train_size=100, test_size=50)

    assert len(train) == 100
    assert len(test) == 50
    assert train.inputs[1].shape == (100, 3, 8, 8)


def test_digits_accepts_palette_list():
    train = DATASETS.build("digits", None, "train", 0, palette=DISTINCT_PALETTE.tolist(), jitter_variance=0.0)

    gray, colored = train.inputs
    expected = gray * torch.from_numpy(DISTINCT_PALETTE[train.labels.numpy()].astype(np.float32))[:, :, None, None]
    assert torch.equal(colored, expected)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"jitter_variance": -1.0}, "jitter_variance must be a number >= 0"),
        ({"palette": "neon"}, "palette must be one of default, saturated"),
        ({"palette": [[0.0, 0.0, 0.0]] * 3}, r"shape \[10, 3\]"),
        ({"train_size": 0}, "train_size must be an integer from 1 to 1437"),
        ({"test_size": 361}, "test_size must be an integer from 1 to 360"),
        ({"test_size": 2.5}, "test_size must be an integer"),
        ({"modalities": ["gray"]}, r"unknown params \['modalities'\]"),
        ({"split_seed": -1}, "split_seed must be an integer >= 0"),
    ],
)
def test_digits_rejects_invalid_params(params, message):
    with pytest.raises(ConfigError, match=message):
        DATASETS.build("digits", None, "train", 0, **params)


@pytest.mark.parametrize(("split", "seed"), [("val", 0), ("train", -1)])
def test_digits_rejects_invalid_split_and_seed(split, seed):
    with pytest.raises(ConfigError):
        DATASETS.build("digits", None, split, seed)


def test_cgmnist_builder_on_tiny_mnist(tmp_path):
    write_fake_mnist(tmp_path, num_train=30, num_test=20)

    train = DATASETS.build("cgmnist", tmp_path, "train", 0, train_size=12)
    test = DATASETS.build("cgmnist", str(tmp_path), "test", 0, train_size=12)

    assert len(train) == 12
    assert len(test) == 20
    assert train.inputs[0].shape == (12, 1, 28, 28)
    assert train.inputs[1].shape == (12, 3, 28, 28)
    assert test.inputs[1].shape == (20, 3, 28, 28)
    assert torch.equal(train.palette_indices, train.labels)
    assert train.modality_names == ("gray", "colored")


def test_cgmnist_builder_is_seeded(tmp_path):
    write_fake_mnist(tmp_path, num_train=30, num_test=20)

    first = DATASETS.build("cgmnist", tmp_path, "train", 1, train_size=12)
    again = DATASETS.build("cgmnist", tmp_path, "train", 1, train_size=12)
    other = DATASETS.build("cgmnist", tmp_path, "train", 2, train_size=12)

    assert torch.equal(first.labels, again.labels)
    assert torch.equal(first.inputs[1], again.inputs[1])
    assert not torch.equal(first.inputs[1], other.inputs[1])


def test_cgmnist_train_and_test_decode_once(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path, num_train=30, num_test=20)
    calls = []
    original = idx.read_idx
    monkeypatch.setattr(idx, "read_idx", lambda path, **kwargs: calls.append(path) or original(path, **kwargs))

    DATASETS.build("cgmnist", tmp_path, "train", 0)
    DATASETS.build("cgmnist", tmp_path, "test", 0)

    assert len(calls) == 4


def test_cgmnist_needs_root():
    with pytest.raises(ConfigError, match="needs a root"):
        DATASETS.build("cgmnist", None, "train", 0)


def test_cgmnist_missing_root(tmp_path):
    with pytest.raises(DataError, match="MNIST directory not found"):
        DATASETS.build("cgmnist", tmp_path / "absent", "train", 0)


def test_cgmnist_subset_larger_than_split(tmp_path):
    write_fake_mnist(tmp_path, num_train=30, num_test=20)

    with pytest.raises(ConfigError, match="train_size must be an integer from 1 to 30; got 31"):
        DATASETS.build("cgmnist", tmp_path, "train", 0, train_size=31)


@pytest.mark.realdata
def test_cgmnist_real_mnist(data_root):
    train = DATASETS.build("cgmnist", data_root / "mnist", "train", 0, train_size=2000, test_size=1000)
    test = DATASETS.build("cgmnist", data_root / "mnist", "test", 0, train_size=2000, test_size=1000)

    assert train.inputs[0].shape == (2000, 1, 28, 28)
    assert train.inputs[1].shape == (2000, 3, 28, 28)
    assert test.inputs[1].shape == (1000, 3, 28, 28)
    assert set(train.labels.tolist()) == set(range(10))
    assert torch.equal(train.palette_indices, train.labels)
    assert (test.palette_indices == test.labels).float().mean() < 0.15
    assert train.inputs[1].max() <= 1.0
    assert train.inputs[0].max() == 1.0
