"""The data set contract shared by every loader, and an in-memory implementation.

A multimodal data set yields ``(inputs, label)`` where ``inputs`` is a tuple with
one tensor per modality, in the order of ``modality_names``. Batches collate to
``(tuple of [B, ...] tensors, [B] int64 labels)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class EncoderSpec:
    """The default encoder of one modality: a registered encoder name and its arguments."""

    name: str
    kwargs: dict = field(default_factory=dict)


class MultimodalDataset(Dataset):
    """Base class: subclasses set the attributes below and implement ``__getitem__``.

    Attributes:
        modality_names: one name per modality, in input order (``("gray", "colored")``).
        class_names: one name per class; labels index this list.
        labels: ``[N]`` int64 tensor of every sample's label, readable without
            loading inputs, so that prototype subsets can be drawn per class.
        default_encoders: one ``EncoderSpec`` per modality, used when a config
            does not name the encoders.
    """

    modality_names: tuple[str, ...]
    class_names: tuple[str, ...]
    labels: torch.Tensor
    default_encoders: tuple[EncoderSpec, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_modalities(self) -> int:
        return len(self.modality_names)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def get_batch(self, indices: Sequence[int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor] | None:
        """Return a whole batch at once, or None when the data set only loads samples one by one."""
        return None


class TensorMultimodalDataset(MultimodalDataset):
    """A data set held in memory as one tensor per modality, batched by fancy indexing.

    Indexing whole batches avoids per-sample collation, which matters for small
    inputs such as MNIST, where collation would cost as much as the model.
    """

    def __init__(
        self,
        inputs: Sequence[torch.Tensor],
        labels: torch.Tensor,
        modality_names: Sequence[str],
        class_names: Sequence[str],
        default_encoders: Sequence[EncoderSpec],
    ) -> None:
        if len(inputs) != len(modality_names):
            raise ValueError(f"got {len(inputs)} input tensors for {len(modality_names)} modality names")
        for name, tensor in zip(modality_names, inputs):
            if tensor.shape[0] != labels.shape[0]:
                raise ValueError(f"modality {name!r} has {tensor.shape[0]} samples but there are {labels.shape[0]} labels")
        self.inputs = tuple(inputs)
        self.labels = labels.long()
        self.modality_names = tuple(modality_names)
        self.class_names = tuple(class_names)
        self.default_encoders = tuple(default_encoders)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], int]:
        return tuple(tensor[index] for tensor in self.inputs), int(self.labels[index])

    def get_batch(self, indices: Sequence[int]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in self.inputs), self.labels[index]


def collate_multimodal(samples: list[tuple[tuple[torch.Tensor, ...], int]]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Stack per-sample ``(inputs, label)`` pairs into one batch."""
    num_modalities = len(samples[0][0])
    inputs = tuple(torch.stack([sample[0][m] for sample in samples]) for m in range(num_modalities))
    labels = torch.tensor([sample[1] for sample in samples], dtype=torch.long)
    return inputs, labels
