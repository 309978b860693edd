"""Audio-visual digits: MNIST images paired with Free Spoken Digit (FSDD) clips of the same digit.

A sample is ``((audio, image), digit)``. ``audio`` is the ``[1, 129, 62]`` log
spectrogram of one FSDD recording, standardized with the mean and standard
deviation of the training clips. Its parameters are ``FSDD_SPECTROGRAM``: 8 kHz,
a 32 ms Hann window every 16 ms and a 256-point FFT, with the clip centered in
1.008 s of silence or cropped around its center. ``image`` is a ``[1, 28, 28]``
MNIST digit in [0, 1].

Every clip is paired with ``pairs_per_clip`` images of its digit, drawn with the
seed from the MNIST split of the clip's side, so train and test share neither
clips nor images. The recordings (27 MB) are decoded once per process and
kept in memory. Two ways to split the clips:

- ``split_by="take"`` (default, the FSDD convention): takes 0-4 of every
  speaker are test (300 clips), takes 5-49 are train (2,700 clips).
- ``split_by="speaker"``: all 500 clips of ``test_speaker`` are test and the
  other five speakers' 2,500 clips are train, which tests generalization to
  an unseen voice.

With ``val_fraction`` > 0, a seeded fraction of the training clips, paired with
a disjoint part of the MNIST training images, forms ``val``.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile
import torch

from modalbalance.data.audio import FSDD_SPECTROGRAM, log_spectrogram
from modalbalance.data.base import EncoderSpec, MultimodalDataset
from modalbalance.data.idx import load_mnist
from modalbalance.data.registry import DATASETS
from modalbalance.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MODALITY_NAMES = ("audio", "image")
CLASS_NAMES = tuple(str(digit) for digit in range(10))
# The same small batch-normalized CNN for both branches: the image branch then learns MNIST within one epoch
# and the audio branch is the slow modality. With the batch-norm-free cgmnist-cnn for the image, the image
# branch was the slower one for at least the first three epochs (Adam, lr 1e-3).
DEFAULT_ENCODERS = (EncoderSpec("small-cnn", {"in_channels": 1, "width": 16}), EncoderSpec("small-cnn", {"in_channels": 1, "width": 16}))
SPLIT_MODES = ("take", "speaker")
# FSDD v1.0.10 puts takes 0-4 in test by its own convention.
TEST_TAKES = range(0, 5)
DEFAULT_TEST_SPEAKER = "george"
FSDD_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z]+)_(?P<take>[0-9]+)\.wav$")
# Seed streams, so that each seeded draw has its own random numbers.
_STREAMS = {"val_clips": 1, "val_images": 2, "pairs_train": 3, "pairs_val": 4, "pairs_test": 5}


@dataclass(frozen=True)
class SpokenDigits:
    """Every FSDD recording of a directory, in file-name order.

    Attributes:
        spectrograms: ``[N, 1, 129, 62]`` float32 log spectrograms, not standardized.
        digits, takes: ``[N]`` int64 arrays.
        speakers: ``[N]`` speaker names.
    """

    spectrograms: torch.Tensor
    digits: np.ndarray
    speakers: np.ndarray
    takes: np.ndarray


@functools.lru_cache(maxsize=2)
def load_spoken_digits(recordings_dir: Path) -> SpokenDigits:
    """Decode every ``{digit}_{speaker}_{take}.wav`` of ``recordings_dir`` into spectrograms; cached per directory.

    Raises DataError when the directory is missing, contains no FSDD files, or a
    file is unreadable or not sampled at 8 kHz.
    """
    if not recordings_dir.is_dir():
        raise DataError(f"FSDD recordings directory not found: {recordings_dir}; data.root must contain fsdd/recordings/")
    paths = sorted(path for path in recordings_dir.iterdir() if FSDD_NAME.match(path.name))
    if not paths:
        raise DataError(f"no FSDD recordings named {{digit}}_{{speaker}}_{{take}}.wav in {recordings_dir}")

    spectrograms, digits, speakers, takes = [], [], [], []
    for path in paths:
        try:
            waveform, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
        except RuntimeError as error:  # soundfile's errors derive from RuntimeError
            raise DataError(f"cannot read FSDD recording {path}: {error}") from None
        if sample_rate != FSDD_SPECTROGRAM.sample_rate:
            raise DataError(f"{path} is sampled at {sample_rate} Hz; FSDD recordings are {FSDD_SPECTROGRAM.sample_rate} Hz")
        if waveform.shape[0] == 0:
            raise DataError(f"FSDD recording {path} has no samples")
        spectrograms.append(log_spectrogram(waveform.mean(axis=1), FSDD_SPECTROGRAM))
        match = FSDD_NAME.match(path.name)
        digits.append(int(match["digit"]))
        speakers.append(match["speaker"])
        takes.append(int(match["take"]))
    logger.info("decoded %d FSDD recordings from %s", len(paths), recordings_dir)
    return SpokenDigits(
        spectrograms=torch.from_numpy(np.stack(spectrograms))[:, None],
        digits=np.array(digits, dtype=np.int64),
        speakers=np.array(speakers),
        takes=np.array(takes, dtype=np.int64),
    )


class PairedDigitsDataset(MultimodalDataset):
    """Image-clip pairs that share one spectrogram per clip instead of a copy per pair.

    ``get_batch`` gathers whole batches by fancy indexing.

    Attributes (besides those of ``MultimodalDataset``):
        spectrograms: ``[clips, 1, F, T]`` float32 standardized log spectrograms.
        images: ``[N, 28, 28]`` uint8 MNIST image of each pair.
        clip_index: ``[N]`` int64 row of ``spectrograms`` of each pair.
        mnist_index: ``[N]`` index of each pair's image in its MNIST split (train for train and val, else test).
        speakers, takes: the FSDD speaker and take of each pair's clip.
    """

    modality_names = MODALITY_NAMES
    class_names = CLASS_NAMES
    default_encoders = DEFAULT_ENCODERS

    def __init__(
        self,
        spectrograms: torch.Tensor,
        images: torch.Tensor,
        clip_index: torch.Tensor,
        mnist_index: torch.Tensor,
        labels: torch.Tensor,
        speakers: np.ndarray,
        takes: np.ndarray,
    ) -> None:
        self.spectrograms = spectrograms
        self.images = images
        self.clip_index = clip_index
        self.mnist_index = mnist_index
        self.labels = labels
        self.speakers = speakers
        self.takes = takes

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        audio = self.spectrograms[self.clip_index[index]]
        image = self.images[index].float().div(255.0)[None]
        return (audio, image), int(self.labels[index])

    def get_batch(self, indices: Sequence[int]) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        audio = self.spectrograms[self.clip_index[index]]
        images = self.images[index].float().div_(255.0)[:, None]
        return (audio, images), self.labels[index]


def _stream(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[purpose]])


def _draw_images(pool_by_digit: dict[int, np.ndarray], clip_digits: np.ndarray, pairs_per_clip: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``[clips, pairs_per_clip]`` image indices with the clip's digit.

    Each digit's images are used in a random order before any is used again,
    so repeats only happen when a digit has more pairs than images.
    """
    chosen = np.empty((len(clip_digits), pairs_per_clip), dtype=np.int64)
    for digit in range(10):
        rows = np.flatnonzero(clip_digits == digit)
        if rows.size == 0:
            continue
        pool = pool_by_digit[digit]
        if pool.size == 0:
            raise DataError(f"no MNIST image of digit {digit} to pair with the FSDD clips")
        needed = rows.size * pairs_per_clip
        rounds = -(-needed // pool.size)  # ceiling division
        order = np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:needed]
        chosen[rows] = order.reshape(rows.size, pairs_per_clip)
    return chosen


def _check_params(split: str, seed: object, split_by: str, test_speaker: str, pairs_per_clip: object, val_fraction: object, speakers: set[str]) -> None:
    if split not in ("train", "val", "test"):
        raise ConfigError(f"dataset 'av-digits' has splits train, val and test; got split {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
    if split_by not in SPLIT_MODES:
        raise ConfigError(f"split_by must be one of {', '.join(SPLIT_MODES)}; got {split_by!r}")
    if split_by == "speaker" and test_speaker not in speakers:
        raise ConfigError(f"test_speaker must be one of {', '.join(sorted(speakers))}; got {test_speaker!r}")
    if isinstance(pairs_per_clip, bool) or not isinstance(pairs_per_clip, int) or pairs_per_clip < 1:
        raise ConfigError(f"pairs_per_clip must be a positive integer; got {pairs_per_clip!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be a number in [0, 1); got {val_fraction!r}")
    if split == "val" and val_fraction == 0:
        raise ConfigError("dataset 'av-digits' has a val split only with val_fraction > 0; set data.val_fraction, e.g. 0.1")


@DATASETS.register("av-digits")
def build_av_digits(
    root: str | Path | None,
    split: str,
    seed: int,
    split_by: str = "take",
    test_speaker: str = DEFAULT_TEST_SPEAKER,
    pairs_per_clip: int = 4,
    val_fraction: float = 0.0,
    **unknown,
) -> PairedDigitsDataset:
    """Build audio-visual digits from ``root/mnist`` (the four MNIST IDX files) and ``root/fsdd/recordings``.

    The default split gives 10,800 train and 1,200 test pairs. The same ``seed``
    gives the same pairs; the pairing, the val hold-out and the train
    standardization statistics depend only on ``seed`` and the params.
    """
    if unknown:
        raise ConfigError(
            f"dataset 'av-digits' got unknown params {sorted(unknown)}; it accepts split_by, test_speaker, pairs_per_clip and val_fraction"
        )
    if root is None:
        raise ConfigError("dataset 'av-digits' needs data.root, the directory containing mnist/ and fsdd/recordings/")
    root = Path(root).expanduser()
    clips = load_spoken_digits((root / "fsdd" / "recordings").resolve())
    _check_params(split, seed, split_by, test_speaker, pairs_per_clip, val_fraction, set(clips.speakers.tolist()))
    train_images, train_labels, test_images, test_labels = load_mnist(root / "mnist")

    # Clips of each side of the split.
    if split_by == "take":
        is_test_clip = np.isin(clips.takes, TEST_TAKES)
    else:
        is_test_clip = clips.speakers == test_speaker
    train_clips = np.flatnonzero(~is_test_clip)
    test_clips = np.flatnonzero(is_test_clip)

    # The val hold-out takes clips from train, and images from MNIST train that train pairs never use.
    train_pool = np.arange(len(train_labels))
    val_clips = np.array([], dtype=np.int64)
    val_pool = np.array([], dtype=np.int64)
    if val_fraction > 0:
        shuffled = _stream(seed, "val_clips").permutation(train_clips)
        count = max(1, round(val_fraction * len(train_clips)))
        val_clips, train_clips = np.sort(shuffled[:count]), np.sort(shuffled[count:])
        shuffled_images = _stream(seed, "val_images").permutation(train_pool)
        image_count = max(1, round(val_fraction * len(train_pool)))
        val_pool, train_pool = np.sort(shuffled_images[:image_count]), np.sort(shuffled_images[image_count:])

    sides = {
        "train": (train_clips, train_images, train_labels, train_pool),
        "val": (val_clips, train_images, train_labels, val_pool),
        "test": (test_clips, test_images, test_labels, np.arange(len(test_labels))),
    }
    clip_rows, images, image_labels, pool = sides[split]
    if clip_rows.size == 0:
        raise DataError(f"the av-digits {split} split has no FSDD clips in {root / 'fsdd' / 'recordings'}")
    pool_by_digit = {digit: pool[image_labels[pool] == digit] for digit in range(10)}
    image_rows = _draw_images(pool_by_digit, clips.digits[clip_rows], pairs_per_clip, _stream(seed, f"pairs_{split}"))

    # Standardize every split with the training clips' statistics, so that no test information leaks in.
    train_spectrograms = clips.spectrograms[train_clips]
    mean, std = train_spectrograms.mean(), train_spectrograms.std()
    spectrograms = (clips.spectrograms[clip_rows] - mean) / std

    pair_clip = np.repeat(np.arange(len(clip_rows)), pairs_per_clip)
    dataset = PairedDigitsDataset(
        spectrograms=spectrograms,
        images=torch.from_numpy(images[image_rows.reshape(-1)]),
        clip_index=torch.from_numpy(pair_clip),
        mnist_index=torch.from_numpy(image_rows.reshape(-1)),
        labels=torch.from_numpy(clips.digits[clip_rows][pair_clip]),
        speakers=clips.speakers[clip_rows][pair_clip],
        takes=clips.takes[clip_rows][pair_clip],
    )
    logger.info(
        "built av-digits %s split (split_by=%s): %d pairs from %d clips, %d per clip",
        split, split_by, len(dataset), len(clip_rows), pairs_per_clip,
    )
    return dataset
