"""CREMA-D, AVE and Kinetics-Sounds data sets read from a prepared directory; frame sampling and augmentation."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from modalbalance.data import av_datasets  # noqa: F401  (registers the data sets)
from modalbalance.data.av_lists import AVE_CATEGORIES, CREMAD_EMOTIONS, LIST_FILES, cremad_actor, list_path, read_list, youtube_id
from modalbalance.data.base import EncoderSpec, collate_multimodal
from modalbalance.data.prepare import FrameSettings, prepare_dataset
from modalbalance.data.registry import DATASETS
from modalbalance.data.synthetic_media import cremad_clip_ids, write_ave_raw, write_cremad_raw, write_kinetics_sounds_raw
from modalbalance.data.video import (
    CROP_RATIO,
    CROP_SCALE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment_frames,
    eval_frames,
    random_resized_crop_box,
    sample_frame_indices,
)
from modalbalance.errors import ConfigError, DataError

torch.set_num_threads(1)
IMAGE_SIZE = 24


def require_ffmpeg() -> None:
    """Skip without ffmpeg, unless MODALBALANCE_REQUIRE_DATA=1 makes that a failure."""
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return
    reason = "ffmpeg/ffprobe not installed (Debian/Ubuntu package: ffmpeg)"
    if os.environ.get("MODALBALANCE_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason}; MODALBALANCE_REQUIRE_DATA=1 makes this a failure")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cremad_root(tmp_path_factory) -> Path:
    """A prepared CREMA-D directory: 12 train clips of 4 actors, all 6 emotions among them, and 4 test clips."""
    require_ffmpeg()
    raw = tmp_path_factory.mktemp("cremad_raw")
    train_ids = cremad_clip_ids(6, first_actor=1001)
    train_ids += [clip for actor in (1002, 1003, 1004) for clip in cremad_clip_ids(2, first_actor=actor)]
    test_ids = cremad_clip_ids(2, first_actor=1005) + ["1001_IEO_NEU_XX", "1002_IEO_SAD_XX"]
    write_cremad_raw(raw, train_ids, test_ids, duration_s=2.0, copy_first=True)
    out = tmp_path_factory.mktemp("cremad_out")
    report = prepare_dataset("cremad", raw, out, workers=1, frames=FrameSettings(size=32), progress=False)
    assert report.failed == 0
    return out


def build(root, split, **params):
    return DATASETS.build("cremad", root, split, 0, image_size=IMAGE_SIZE, **params)


def test_cremad_sizes_and_labels(cremad_root):
    train, test = build(cremad_root, "train"), build(cremad_root, "test")
    assert len(train) == 12
    assert len(test) == 4
    expected = [CREMAD_EMOTIONS.index(clip.split("_")[2]) for clip in train.clip_ids]
    assert train.labels.tolist() == expected
    assert train.labels.dtype == torch.int64


def test_cremad_contract_attributes(cremad_root):
    dataset = build(cremad_root, "train")
    assert dataset.modality_names == ("audio", "visual")
    assert dataset.class_names == CREMAD_EMOTIONS
    assert dataset.num_classes == 6
    assert dataset.default_encoders == (
        EncoderSpec("resnet18", {"in_channels": 1}),
        EncoderSpec("resnet18-frames", {"in_channels": 3}),
    )


def test_cremad_sample_shapes(cremad_root):
    (audio, visual), label = build(cremad_root, "train", num_frames=3)[0]
    assert audio.shape == (1, 257, 299)
    assert audio.dtype == torch.float32
    assert visual.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert isinstance(label, int)


def test_cremad_batches_collate(cremad_root):
    loader = DataLoader(build(cremad_root, "test"), batch_size=3, collate_fn=collate_multimodal)
    (audio, visual), labels = next(iter(loader))
    assert audio.shape == (3, 1, 257, 299)
    assert visual.shape == (3, 3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert labels.shape == (3,)


def test_cremad_train_augmentation_is_seeded(cremad_root):
    first = build(cremad_root, "train")[2][0][1]
    again = build(cremad_root, "train")[2][0][1]
    torch.testing.assert_close(first, again)

    other_seed = DATASETS.build("cremad", cremad_root, "train", 1, image_size=IMAGE_SIZE)[2][0][1]
    assert not torch.equal(first, other_seed)


def test_cremad_set_epoch_draws_new_augmentation(cremad_root):
    dataset = build(cremad_root, "train")
    first = dataset[2][0][1]
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[2][0][1])
    dataset.set_epoch(0)
    torch.testing.assert_close(first, dataset[2][0][1])


def test_cremad_test_samples_are_fixed(cremad_root):
    dataset = build(cremad_root, "test")
    first = dataset[0][0][1]
    dataset.set_epoch(5)
    torch.testing.assert_close(first, dataset[0][0][1])
    assert dataset.augment is False


def test_cremad_augment_param_overrides_split(cremad_root):
    assert build(cremad_root, "train", augment=False).augment is False
    assert build(cremad_root, "test", augment=True).augment is True


def test_cremad_val_needs_fraction(cremad_root):
    with pytest.raises(ConfigError, match="val_fraction"):
        build(cremad_root, "val")


def test_cremad_val_is_actor_disjoint(cremad_root):
    train = build(cremad_root, "train", val_fraction=0.25)
    val = build(cremad_root, "val", val_fraction=0.25)
    train_actors = {cremad_actor(clip) for clip in train.clip_ids}
    val_actors = {cremad_actor(clip) for clip in val.clip_ids}
    assert len(val_actors) == 1  # 25% of 4 actors
    assert not train_actors & val_actors
    assert sorted(train.clip_ids + val.clip_ids) == sorted(build(cremad_root, "train").clip_ids)


def test_cremad_val_depends_on_seed(cremad_root):
    def val_actors(seed):
        dataset = DATASETS.build("cremad", cremad_root, "val", seed, image_size=IMAGE_SIZE, val_fraction=0.25)
        return {cremad_actor(clip) for clip in dataset.clip_ids}

    assert val_actors(0) == val_actors(0)
    assert len({frozenset(val_actors(seed)) for seed in range(8)}) > 1


def test_cremad_val_leaves_test_alone(cremad_root):
    assert build(cremad_root, "test", val_fraction=0.5).clip_ids == build(cremad_root, "test").clip_ids


def test_unprepared_clip_raises(cremad_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(cremad_root, root)
    missing = build(root, "train").clip_ids[3]
    (root / "done" / f"{missing}.json").unlink()
    with pytest.raises(DataError, match=f"1 of 12 cremad train clips are not prepared .*first: {missing}.*modalbalance prepare cremad"):
        build(root, "train")


def test_unprepared_clip_skipped_on_request(cremad_root, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(cremad_root, root)
    missing = build(root, "train").clip_ids[3]
    (root / "done" / f"{missing}.json").unlink()
    with caplog.at_level(logging.WARNING, logger="modalbalance.data.av_datasets"):
        dataset = build(root, "train", skip_missing=True)
    assert len(dataset) == 11
    assert missing not in dataset.clip_ids
    assert "left out 1 of 12 clips" in caplog.text


def test_unprepared_root_raises(tmp_path):
    with pytest.raises(DataError, match="not a prepared directory"):
        build(tmp_path, "train")


def test_root_of_other_dataset_raises(cremad_root):
    with pytest.raises(DataError, match="contains prepared 'cremad' clips, not 'ave'"):
        DATASETS.build("ave", cremad_root, "train", 0)


def test_missing_root_raises():
    with pytest.raises(ConfigError, match="needs data.root"):
        DATASETS.build("cremad", None, "train", 0)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"frames": 3}, "unknown params \\['frames'\\]"),
        ({"num_frames": 0}, "num_frames must be a positive integer"),
        ({"image_size": 2.5}, "image_size must be a positive integer"),
        ({"val_fraction": 1.0}, "val_fraction must be a number in \\[0, 1\\)"),
    ],
)
def test_invalid_params_raise(cremad_root, params, message):
    with pytest.raises(ConfigError, match=message):
        DATASETS.build("cremad", cremad_root, "train", 0, **params)


def test_unknown_split_raises(cremad_root):
    with pytest.raises(ConfigError, match="has splits train, val, test; got split 'dev'"):
        build(cremad_root, "dev")


def test_corrupt_frame_raises_data_error(cremad_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(cremad_root, root)
    dataset = build(root, "test")
    for frame in (root / "frames" / dataset.clip_ids[0]).iterdir():
        frame.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read frame"):
        dataset[0]


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory) -> Path:
    require_ffmpeg()
    raw = tmp_path_factory.mktemp("ave_raw")
    splits = {
        "train": [(0, "vidA_aaaaa", 2, 6), (3, "vidA_aaaaa", 2, 6), (27, "vidB_bbbbb", 0, 10)],
        "val": [(1, "vidC_ccccc", 0, 10)],
        "test": [(2, "vidD_ddddd", 5, 8)],
    }
    write_ave_raw(raw, splits)
    out = tmp_path_factory.mktemp("ave_out")
    prepare_dataset("ave", raw, out, workers=1, frames=FrameSettings(size=32), progress=False)
    return out


def test_ave_splits(ave_root):
    train = DATASETS.build("ave", ave_root, "train", 0, image_size=IMAGE_SIZE)
    assert train.clip_ids == ["vidA_aaaaa_2_6", "vidA_aaaaa_2_6", "vidB_bbbbb_0_10"]
    assert train.labels.tolist() == [0, 3, 27]
    assert train.class_names == AVE_CATEGORIES
    assert len(DATASETS.build("ave", ave_root, "val", 0)) == 1
    assert len(DATASETS.build("ave", ave_root, "test", 0)) == 1


def test_ave_sample_shapes(ave_root):
    (audio, visual), _ = DATASETS.build("ave", ave_root, "test", 0, image_size=IMAGE_SIZE)[0]
    assert audio.shape == (1, 257, 1004)
    assert visual.shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_ave_rejects_val_fraction(ave_root):
    with pytest.raises(ConfigError, match="unknown params \\['val_fraction'\\]"):
        DATASETS.build("ave", ave_root, "train", 0, val_fraction=0.1)


def test_kinetics_sounds_dataset(tmp_path):
    require_ffmpeg()
    clips = [("-abcdefghij_000010_000020", 4), ("-abcdefghij_000030_000040", 4), ("Zyxwvu_tsrq_000001_000011", 30)]
    raw = write_kinetics_sounds_raw(tmp_path / "raw", {"train": clips, "test": [("Qwertyuiopa_7", 0)]}, duration_s=2.0)
    prepare_dataset("kinetics-sounds", raw, tmp_path / "out", frames=FrameSettings(size=32), progress=False)

    train = DATASETS.build("kinetics-sounds", tmp_path / "out", "train", 0, image_size=IMAGE_SIZE)
    assert train.num_classes == 31
    assert train.labels.tolist() == [4, 4, 30]
    (audio, visual), _ = train[0]
    assert audio.shape == (1, 257, 1004)
    assert visual.shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)

    # Both clips of one YouTube video land on the same side of the validation hold-out.
    for seed in range(4):
        val = DATASETS.build("kinetics-sounds", tmp_path / "out", "val", seed, val_fraction=0.5)
        assert {youtube_id(clip) for clip in val.clip_ids} in ({"-abcdefghij"}, {"Zyxwvu_tsrq"})


# Frame sampling and augmentation


def test_evenly_spaced_indices_by_hand():
    assert sample_frame_indices(10, 3) == [1, 5, 8]
    assert sample_frame_indices(10, 4) == [1, 3, 6, 8]
    assert sample_frame_indices(2, 3) == [0, 1, 1]
    assert sample_frame_indices(1, 4) == [0, 0, 0, 0]


def test_random_indices_distinct_and_sorted():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        picks = sample_frame_indices(10, 4, generator)
        assert picks == sorted(set(picks))
        assert all(0 <= pick < 10 for pick in picks)


def test_random_indices_repeat_only_when_short():
    picks = sample_frame_indices(2, 5, torch.Generator().manual_seed(0))
    assert len(picks) == 5
    assert set(picks) <= {0, 1}


def test_crop_box_within_frame_and_ranges():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, height, width = random_resized_crop_box(32, 48, generator)
        assert top >= 0
        assert top + height <= 32
        assert left >= 0
        assert left + width <= 48
        assert CROP_SCALE[0] * 0.8 <= height * width / (32 * 48) <= CROP_SCALE[1]
        assert CROP_RATIO[0] * 0.8 <= width / height <= CROP_RATIO[1] * 1.25


def test_eval_frames_normalize_uniform_gray():
    frames = torch.full((2, 3, 10, 10), 128, dtype=torch.uint8)
    result = eval_frames(frames, image_size=6)
    assert result.shape == (2, 3, 6, 6)
    for channel in range(3):
        expected = (128 / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        torch.testing.assert_close(result[:, channel], torch.full((2, 6, 6), expected))


def test_augment_frames_independent_per_frame():
    # A horizontal ramp: flipped and unflipped crops differ, so identical frames get different outputs.
    ramp = torch.arange(32, dtype=torch.uint8).mul(8).expand(3, 32, 32)
    frames = ramp.expand(6, 3, 32, 32).contiguous()
    result = augment_frames(frames, image_size=16, generator=torch.Generator().manual_seed(0))
    assert result.shape == (6, 3, 16, 16)
    assert len({tuple(frame[0, 0].tolist()) for frame in result}) > 1


# The split lists shipped with the data


def test_real_lists_parse(data_root):
    splits = data_root / "splits"
    expected = {
        "cremad": ("cremad", {"train": 6698, "test": 744}, 6),
        "ave": ("ave", {"train": 3339, "val": 402, "test": 402}, 28),
        "kinetics-sounds": ("kinetics_sounds", {"train": 14799, "test": 2597}, 31),
    }
    for dataset, (folder, sizes, classes) in expected.items():
        labels = set()
        for split, size in sizes.items():
            entries = read_list(dataset, list_path(splits / folder, dataset, split))
            assert len(entries) == size, (dataset, split)
            labels |= {entry.label for entry in entries}
        assert len(labels) == classes, dataset
        assert set(sizes) == set(LIST_FILES[dataset])


def test_real_cremad_lists_have_91_actors(data_root):
    entries = read_list("cremad", data_root / "splits" / "cremad" / "train.csv")
    assert len({cremad_actor(entry.clip_id) for entry in entries}) == 91


# Shipped configs


CONFIG_NAMES = [
    f"{folder}/{method}_{fusion}"
    for folder in ("cremad", "ave", "kinetics_sounds", "av_digits")
    for method in ("naive", "pmr")
    for fusion in ("concat", "sum", "film", "gated")
]


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.skipif(importlib.util.find_spec("modalbalance.training.config") is None, reason="trainer not installed")
def test_shipped_config_valid(name):
    import inspect

    from modalbalance.data import av_digits  # noqa: F401  (registers av-digits)
    from modalbalance.training.config import load_config

    config = load_config(name)
    builder = DATASETS.get(config["data"]["name"])
    accepted = set(inspect.signature(builder).parameters)
    for key in config["data"]:
        if key not in ("name", "root", "modalities"):
            assert key in accepted, (name, key)
    assert config["method"]["name"] == name.split("/")[1].split("_")[0]
    assert config["model"]["fusion"] == name.rsplit("_", 1)[1]
    assert config["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0001}
    assert config["scheduler"] == {"name": "step", "step_size": 70, "gamma": 0.1}
    assert config["train"]["epochs"] == 100
    assert config["train"]["batch_size"] == 64
    if config["method"]["name"] == "pmr":
        expected_alpha = 2.0 if config["model"]["fusion"] in ("concat", "sum") else 1.0
        assert config["method"]["alpha"] == expected_alpha
        assert config["method"]["modulation_end"] == 70


# One epoch of the trainer on prepared CREMA-D


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("modalbalance.training.runner") is None, reason="trainer not installed")
def test_one_training_epoch_on_prepared_cremad(cremad_root, tmp_path):
    from modalbalance.models import resnet  # noqa: F401  (registers the ResNet18 encoders)
    from modalbalance.training.runner import train

    config = {
        "seed": 0,
        "data": {"name": "cremad", "root": str(cremad_root), "num_frames": 2, "image_size": 32},
        "model": {"fusion": "concat", "embedding_dim": 512},
        "method": {"name": "pmr", "alpha": 2.0, "mu": 0.001},
        "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 4, "prototype_fraction": 1.0, "progress": False},
    }
    summary = train(config, tmp_path / "run")
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert set(summary["modality_test_accuracy"]) == {"audio", "visual"}
    assert (tmp_path / "run" / "last.pt").is_file()
    assert np.isfinite(summary["test_accuracy"])
