"""Frame sampling, loading and augmentation for clips stored as JPEG frames.

Training clips get T frames drawn at random, and each frame gets a random
resized crop and a horizontal flip. Evaluation clips get T evenly spaced
frames, only resized. The code uses torch tensor ops and draws from an explicit
``torch.Generator``, so that a sample's augmentation depends only on its seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from modalbalance.errors import DataError

# Per-channel RGB statistics of ImageNet, the usual normalization of ResNet inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Crop area as a fraction of the frame and crop aspect ratio (width / height): the common ImageNet ranges.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


def sample_frame_indices(num_available: int, num_frames: int, generator: torch.Generator | None = None) -> list[int]:
    """Pick ``num_frames`` of ``num_available`` frame indices, in time order.

    Without a generator the picks are evenly spaced: frame ``i`` is the centre
    of the ``i``-th of ``num_frames`` equal parts. With one they are drawn at
    random, without repetition unless the clip has fewer than ``num_frames`` frames.
    """
    if num_available < 1:
        raise ValueError("a clip needs at least one frame")
    if generator is None:
        return [min(num_available - 1, math.floor((i + 0.5) * num_available / num_frames)) for i in range(num_frames)]
    if num_available >= num_frames:
        picks = torch.randperm(num_available, generator=generator)[:num_frames]
    else:
        picks = torch.randint(num_available, (num_frames,), generator=generator)
    return sorted(picks.tolist())


def load_frames(paths: Sequence[Path]) -> torch.Tensor:
    """Decode JPEG frames into a ``[T, 3, H, W]`` uint8 tensor; all frames must have one size."""
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read frame {path} ({error}); delete its clip's done marker and run prepare again") from None
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def random_resized_crop_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """Return ``(top, left, crop_height, crop_width)`` of a random crop with area in ``CROP_SCALE`` and aspect in ``CROP_RATIO``.

    Falls back to the largest centered crop within the aspect range when
    ``CROP_ATTEMPTS`` draws all fall outside the frame.
    """
    area = height * width
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(CROP_ATTEMPTS):
        draws = torch.rand(2, generator=generator).tolist()
        target_area = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * draws[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * draws[1])
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(height - crop_height + 1, (1,), generator=generator))
            left = int(torch.randint(width - crop_width + 1, (1,), generator=generator))
            return top, left, crop_height, crop_width

    aspect = width / height
    if aspect < CROP_RATIO[0]:
        crop_width, crop_height = width, round(width / CROP_RATIO[0])
    elif aspect > CROP_RATIO[1]:
        crop_height, crop_width = height, round(height * CROP_RATIO[1])
    else:
        crop_height, crop_width = height, width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def _to_unit_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float().div_(255.0)


def _resize(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    if frames.shape[-2:] == (image_size, image_size):
        return frames
    return F.interpolate(frames, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """Standardize ``[T, 3, H, W]`` frames in [0, 1] with the ImageNet channel statistics."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (frames - mean) / std


def augment_frames(frames: torch.Tensor, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """Crop, resize and flip each uint8 ``[T, 3, H, W]`` frame independently; return normalized float frames."""
    height, width = frames.shape[-2:]
    augmented = []
    for frame in _to_unit_float(frames):
        top, left, crop_height, crop_width = random_resized_crop_box(height, width, generator)
        crop = frame[None, :, top : top + crop_height, left : left + crop_width]
        crop = _resize(crop, image_size)
        if bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(-1)
        augmented.append(crop[0])
    return normalize_frames(torch.stack(augmented))


def eval_frames(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize uint8 ``[T, 3, H, W]`` frames to ``image_size`` and normalize them, without augmentation."""
    return normalize_frames(_resize(_to_unit_float(frames), image_size))
