"""Data for a training run: building the splits, choosing modalities, subsets and batch iteration."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from modalbalance.data.base import MultimodalDataset, collate_multimodal
from modalbalance.errors import ConfigError, DataError

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


class ModalitySubset(MultimodalDataset):
    """A view of a data set that keeps only some modalities, in the order given."""

    def __init__(self, dataset: MultimodalDataset, names: Sequence[str]) -> None:
        unknown = [name for name in names if name not in dataset.modality_names]
        if unknown:
            raise ConfigError(
                f"data.modalities contains unknown modality {unknown[0]!r}; this data set has {', '.join(dataset.modality_names)}"
            )
        self.dataset = dataset
        self.positions = [dataset.modality_names.index(name) for name in names]
        self.modality_names = tuple(names)
        self.class_names = dataset.class_names
        self.labels = dataset.labels
        self.default_encoders = tuple(dataset.default_encoders[p] for p in self.positions)

    def set_epoch(self, epoch: int) -> None:
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __getitem__(self, index: int):
        inputs, label = self.dataset[index]
        return tuple(inputs[p] for p in self.positions), label

    def get_batch(self, indices: Sequence[int]) -> Batch | None:
        batch = self.dataset.get_batch(indices)
        if batch is None:
            return None
        inputs, labels = batch
        return tuple(inputs[p] for p in self.positions), labels


def check_dataset(dataset: MultimodalDataset, split: str, name: str) -> None:
    """Reject empty splits and labels outside the class list before training starts."""
    if len(dataset) == 0:
        raise DataError(f"the {split} split of data set {name!r} is empty; check data.root and the split lists")
    labels = dataset.labels
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= dataset.num_classes):
        bad = int(labels.max()) if int(labels.max()) >= dataset.num_classes else int(labels.min())
        raise DataError(
            f"the {split} split of data set {name!r} has label {bad}, outside the {dataset.num_classes} classes 0..{dataset.num_classes - 1}"
        )


def draw_subset(labels: torch.Tensor, fraction: float, seed: int, top_up: bool = True, pool: torch.Tensor | None = None) -> torch.Tensor:
    """Draw a seeded random fraction of the sample indices in ``pool`` (default: all of them), sorted.

    With ``top_up``, every class present in the pool but absent from the draw
    gets one random sample of its own from the pool added, so that every such
    class has a prototype. A pool of all indices gives the same draw as no pool.
    """
    if pool is None:
        pool = torch.arange(labels.numel())
    generator = torch.Generator().manual_seed(seed)
    count = max(1, round(fraction * pool.numel()))
    chosen = pool[torch.randperm(pool.numel(), generator=generator)[:count]]
    if top_up:
        pool_labels = labels[pool]
        present = torch.zeros(int(labels.max()) + 1, dtype=torch.bool)
        present[labels[chosen]] = True
        for k in torch.nonzero(~present).flatten().tolist():
            candidates = pool[pool_labels == k]
            if candidates.numel():
                pick = candidates[torch.randint(candidates.numel(), (1,), generator=generator)]
                chosen = torch.cat([chosen, pick])
    return chosen.sort().values


class BatchLoader:
    """Batches over ``indices`` of a data set, in a seeded order that depends only on (seed, epoch).

    Evaluation loaders never drop the last, smaller batch.

    With ``world_size > 1`` (distributed data parallel) every process draws the
    same global order and global batches, and process ``rank`` takes its slice
    of each global batch: ``torch.tensor_split`` into ``world_size`` parts, so
    the slices differ in size by at most one sample. Together the processes see
    exactly the batches of a single-process run. A process whose slice of a
    batch is empty skips that batch, so ``len`` counts global batches.
    """

    def __init__(
        self,
        dataset: MultimodalDataset,
        indices: torch.Tensor | None,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size - 1; got rank {rank} of {world_size}")
        self.dataset = dataset
        self.indices = torch.arange(len(dataset)) if indices is None else indices
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.in_memory = dataset.get_batch([0]) is not None if len(dataset) else True

    def __len__(self) -> int:
        return (self.indices.numel() + self.batch_size - 1) // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return self.indices
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return self.indices[torch.randperm(self.indices.numel(), generator=generator)]

    def local_batches(self, epoch: int = 0) -> list[torch.Tensor]:
        """Return this process's sample indices of every global batch, empty slices left out."""
        order = self.order(epoch)
        slices = []
        for start in range(0, order.numel(), self.batch_size):
            batch = order[start : start + self.batch_size]
            if self.world_size > 1:
                batch = batch.tensor_split(self.world_size)[self.rank]
            if batch.numel():
                slices.append(batch)
        return slices

    def local_size(self) -> int:
        """Return the number of samples this process receives in one pass."""
        if self.world_size == 1:
            return self.indices.numel()
        return sum(batch.numel() for batch in self.local_batches(0))

    def batches(self, epoch: int = 0) -> Iterator[Batch]:
        slices = self.local_batches(epoch)
        if self.in_memory:
            for batch in slices:
                yield self.dataset.get_batch(batch)
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=[batch.tolist() for batch in slices],
            num_workers=self.num_workers,
            collate_fn=collate_multimodal,
        )
        yield from loader

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)
