"""CREMA-D, AVE and Kinetics-Sounds data sets, read lazily from a ``modalbalance prepare`` directory.

Each sample is ``((audio, visual), label)``: ``audio`` is the ``[1, F, T]`` log
spectrogram and ``visual`` is ``[num_frames, 3, image_size, image_size]``
normalized frames. Training samples get random frames and per-frame
augmentation from a generator seeded by ``(seed, epoch, index)``; call
``set_epoch`` once per epoch to draw new ones. Evaluation samples get evenly
spaced frames and no augmentation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from modalbalance.data.av_lists import (
    AVE_CATEGORIES,
    CREMAD_EMOTIONS,
    KINETICS_SOUNDS_CLASSES,
    LIST_FILES,
    ListEntry,
    cremad_actor,
    list_path,
    read_list,
    youtube_id,
)
from modalbalance.data.base import EncoderSpec, MultimodalDataset
from modalbalance.data.prepare import read_prepare_info
from modalbalance.data.registry import DATASETS
from modalbalance.data.video import augment_frames, eval_frames, load_frames, sample_frame_indices
from modalbalance.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MODALITY_NAMES = ("audio", "visual")
DEFAULT_ENCODERS = (EncoderSpec("resnet18", {"in_channels": 1}), EncoderSpec("resnet18-frames", {"in_channels": 3}))
# Mixed into the seed of the validation hold-out, so that it does not reuse the stream of other seeded draws.
VALIDATION_STREAM = 7_301


class PreparedClipDataset(MultimodalDataset):
    """Audio-visual clips stored by ``modalbalance prepare`` under ``root``.

    Attributes (besides those of ``MultimodalDataset``):
        clip_ids: the prepared clip of each sample; AVE lists some clips twice with two labels.
        augment: whether samples get random frames and augmentation.
    """

    modality_names = MODALITY_NAMES
    default_encoders = DEFAULT_ENCODERS

    def __init__(
        self,
        root: str | Path,
        clip_ids: Sequence[str],
        labels: Sequence[int],
        class_names: Sequence[str],
        num_frames: int,
        image_size: int,
        augment: bool,
        seed: int,
        spectrogram_shape: Sequence[int],
    ) -> None:
        self.root = Path(root)
        self.clip_ids = list(clip_ids)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.class_names = tuple(class_names)
        self.num_frames = num_frames
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.spectrogram_shape = tuple(spectrogram_shape)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of an epoch; without calls, every epoch repeats epoch 0's frames and crops."""
        self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator:
        # SeedSequence mixes the three numbers into well-spread generator seeds, unlike adding or hashing them.
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def load_audio(self, index: int) -> torch.Tensor:
        path = self.root / "audio" / f"{self.clip_ids[index]}.npy"
        try:
            spectrogram = np.load(path)
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read spectrogram {path} ({error}); delete its done marker and run prepare again") from None
        if spectrogram.shape != self.spectrogram_shape:
            raise DataError(f"spectrogram {path} has shape {spectrogram.shape}; prepare.json expects {self.spectrogram_shape}")
        return torch.from_numpy(spectrogram.astype(np.float32))[None]

    def frame_paths(self, index: int) -> list[Path]:
        """Return the clip's frame files in time order (sorted names, not directory order)."""
        folder = self.root / "frames" / self.clip_ids[index]
        paths = sorted(folder.glob("frame_*.jpg"))
        if not paths:
            raise DataError(f"no frames in {folder}; delete the clip's done marker and run prepare again")
        return paths

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        paths = self.frame_paths(index)
        generator = self._generator(index) if self.augment else None
        picks = sample_frame_indices(len(paths), self.num_frames, generator)
        frames = load_frames([paths[i] for i in picks])
        if generator is not None:
            visual = augment_frames(frames, self.image_size, generator)
        else:
            visual = eval_frames(frames, self.image_size)
        return (self.load_audio(index), visual), int(self.labels[index])


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def _check_common_params(dataset: str, root: object, split: str, splits: Sequence[str], seed: object, num_frames: object, image_size: object) -> None:
    if root is None:
        raise ConfigError(f"dataset {dataset!r} needs data.root, the directory written by 'modalbalance prepare {dataset}'")
    if split not in splits:
        raise ConfigError(f"dataset {dataset!r} has splits {', '.join(splits)}; got split {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
    _check_positive_int("num_frames", num_frames)
    _check_positive_int("image_size", image_size)


def _reject_unknown_params(dataset: str, unknown: dict, accepted: str) -> None:
    if unknown:
        raise ConfigError(f"dataset {dataset!r} got unknown params {sorted(unknown)}; it accepts {accepted}")


def _check_val_fraction(val_fraction: object) -> float:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be a number in [0, 1); got {val_fraction!r}")
    return float(val_fraction)


def held_out_groups(groups: Sequence[str], fraction: float, seed: int) -> set[str]:
    """Return a seeded random ``fraction`` (at least one) of the distinct ``groups``."""
    distinct = sorted(set(groups))
    count = max(1, round(fraction * len(distinct)))
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    return {distinct[i] for i in rng.choice(len(distinct), size=count, replace=False)}


def _split_off_validation(
    dataset: str,
    entries: list[ListEntry],
    split: str,
    val_fraction: float,
    seed: int,
    group_of: Callable[[str], str],
    group_name: str,
) -> list[ListEntry]:
    """Return the train-list entries of ``split``: all of them, or those outside/inside the held-out groups."""
    if val_fraction == 0:
        if split == "val":
            raise ConfigError(
                f"dataset {dataset!r} has a val split only with val_fraction > 0 (the published lists have none); set data.val_fraction, e.g. 0.1"
            )
        return entries
    held_out = held_out_groups([group_of(entry.clip_id) for entry in entries], val_fraction, seed)
    want_held_out = split == "val"
    chosen = [entry for entry in entries if (group_of(entry.clip_id) in held_out) == want_held_out]
    logger.info("%s %s: %d clips; %d of the training list's %ss are held out for val", dataset, split, len(chosen), len(held_out), group_name)
    return chosen


def _keep_prepared(dataset: str, root: Path, split: str, entries: list[ListEntry], skip_missing: bool) -> list[ListEntry]:
    done = {name[: -len(".json")] for name in os.listdir(root / "done")} if (root / "done").is_dir() else set()
    missing = [entry.clip_id for entry in entries if entry.clip_id not in done]
    if not missing:
        return entries
    if not skip_missing:
        raise DataError(
            f"{len(missing)} of {len(entries)} {dataset} {split} clips are not prepared in {root} (first: {missing[0]}); "
            f"run 'modalbalance prepare {dataset} --raw RAW_DIR --out {root}', or set data.skip_missing: true to leave them out"
        )
    logger.warning(
        "%s %s: left out %d of %d clips that are not prepared in %s (first: %s); see prepare_report.json there",
        dataset, split, len(missing), len(entries), root, missing[0],
    )
    missing_set = set(missing)
    return [entry for entry in entries if entry.clip_id not in missing_set]


def _build(
    dataset: str,
    root: str | Path,
    split: str,
    seed: int,
    entries: list[ListEntry],
    class_names: Sequence[str],
    num_frames: int,
    image_size: int,
    augment: bool | None,
    skip_missing: bool,
) -> PreparedClipDataset:
    root = Path(root)
    info = read_prepare_info(root)
    entries = _keep_prepared(dataset, root, split, entries, skip_missing)
    if not entries:
        raise DataError(f"{dataset} {split} split has no prepared clips in {root}")
    result = PreparedClipDataset(
        root=root,
        clip_ids=[entry.clip_id for entry in entries],
        labels=[entry.label for entry in entries],
        class_names=class_names,
        num_frames=num_frames,
        image_size=image_size,
        augment=split == "train" if augment is None else bool(augment),
        seed=seed,
        spectrogram_shape=info["spectrogram_shape"],
    )
    logger.info("built %s %s split: %d clips, %d frames of %d px, augment=%s", dataset, split, len(result), num_frames, image_size, result.augment)
    return result


def _read_split_entries(dataset: str, root: str | Path, splits_dir: str | Path | None, list_split: str) -> list[ListEntry]:
    """Check that ``root`` contains prepared ``dataset`` clips and return the entries of one list file."""
    info = read_prepare_info(root)
    if info.get("dataset") != dataset:
        raise DataError(f"{root} contains prepared {info.get('dataset')!r} clips, not {dataset!r}; point data.root at a {dataset} directory")
    directory = Path(splits_dir) if splits_dir is not None else Path(root) / "splits"
    return read_list(dataset, list_path(directory, dataset, list_split))


@DATASETS.register("cremad")
def build_cremad(
    root: str | Path | None,
    split: str,
    seed: int,
    num_frames: int = 3,
    image_size: int = 224,
    splits_dir: str | Path | None = None,
    val_fraction: float = 0.0,
    skip_missing: bool = False,
    augment: bool | None = None,
    **unknown,
) -> PreparedClipDataset:
    """CREMA-D: 6 emotions, 6,698 train and 744 test clips (the lists of the PMR and OGM-GE papers).

    The published lists share actors between train and test and have no
    validation set. With ``val_fraction`` > 0 a seeded random fraction of the
    training list's actors (at least one) forms ``val``, and ``train`` loses
    their clips, so that val is actor-disjoint from train. ``splits_dir``
    defaults to ``root/splits``, where prepare copies the lists.
    """
    _reject_unknown_params(
        "cremad", unknown, "num_frames, image_size, splits_dir, val_fraction, skip_missing and augment"
    )
    _check_common_params("cremad", root, split, ("train", "val", "test"), seed, num_frames, image_size)
    val_fraction = _check_val_fraction(val_fraction)
    entries = _read_split_entries("cremad", root, splits_dir, "test" if split == "test" else "train")
    if split != "test":
        entries = _split_off_validation("cremad", entries, split, val_fraction, seed, cremad_actor, "actor")
    return _build("cremad", root, split, seed, entries, CREMAD_EMOTIONS, num_frames, image_size, augment, skip_missing)


@DATASETS.register("ave")
def build_ave(
    root: str | Path | None,
    split: str,
    seed: int,
    num_frames: int = 4,
    image_size: int = 224,
    splits_dir: str | Path | None = None,
    skip_missing: bool = False,
    augment: bool | None = None,
    **unknown,
) -> PreparedClipDataset:
    """AVE: 28 audio-visual events, 3,339 train, 402 val and 402 test lines; only the annotated segment is used.

    45 videos are listed twice with two categories for one segment; both lines
    are kept, so such a clip appears twice with two labels.
    """
    _reject_unknown_params("ave", unknown, "num_frames, image_size, splits_dir, skip_missing and augment")
    _check_common_params("ave", root, split, tuple(LIST_FILES["ave"]), seed, num_frames, image_size)
    entries = _read_split_entries("ave", root, splits_dir, split)
    return _build("ave", root, split, seed, entries, AVE_CATEGORIES, num_frames, image_size, augment, skip_missing)


@DATASETS.register("kinetics-sounds")
def build_kinetics_sounds(
    root: str | Path | None,
    split: str,
    seed: int,
    num_frames: int = 4,
    image_size: int = 224,
    splits_dir: str | Path | None = None,
    val_fraction: float = 0.0,
    skip_missing: bool = False,
    augment: bool | None = None,
    **unknown,
) -> PreparedClipDataset:
    """Kinetics-Sounds: 31 classes, 14,799 train and 2,597 test clips.

    With ``val_fraction`` > 0 a seeded fraction of the training list's YouTube
    videos forms ``val``, so that clips cut from one video stay on one side.
    """
    _reject_unknown_params(
        "kinetics-sounds", unknown, "num_frames, image_size, splits_dir, val_fraction, skip_missing and augment"
    )
    _check_common_params("kinetics-sounds", root, split, ("train", "val", "test"), seed, num_frames, image_size)
    val_fraction = _check_val_fraction(val_fraction)
    entries = _read_split_entries("kinetics-sounds", root, splits_dir, "test" if split == "test" else "train")
    if split != "test":
        entries = _split_off_validation("kinetics-sounds", entries, split, val_fraction, seed, youtube_id, "YouTube video")
    return _build(
        "kinetics-sounds", root, split, seed, entries, KINETICS_SOUNDS_CLASSES, num_frames, image_size, augment, skip_missing
    )
