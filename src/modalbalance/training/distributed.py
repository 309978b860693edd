"""Distributed data parallel training under ``torchrun``: process group set-up, rank queries and all-reduce helpers.

``torchrun --nproc_per_node=N`` starts N copies of the trainer and sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
in each. ``init_from_env`` joins the process group when ``WORLD_SIZE > 1``,
with the gloo backend on CPU and NCCL on CUDA. Without torchrun, or with one
process, every helper here is a no-op, so the trainer runs the same code either way.

The helpers sum over processes. A caller that needs a mean divides the summed
value by a summed count, so that processes with unequal shares still give the
single-process result.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist

from modalbalance.errors import ConfigError
from modalbalance.pmr import PrototypeAccumulator

logger = logging.getLogger(__name__)

# A collective that waits longer than this has lost a peer (a crashed or killed rank).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


def env_world_size() -> int:
    """Return ``WORLD_SIZE`` as set by torchrun, or 1 when it is unset."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable WORLD_SIZE must be an integer; got {text!r}") from None


def env_rank() -> int:
    """Return ``RANK`` as set by torchrun, or 0 when it is unset. Unlike ``rank``, it works after ``shutdown`` too."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        raise ConfigError(f"environment variable RANK must be an integer; got {os.environ['RANK']!r}") from None


def init_from_env(device_type: str) -> torch.device | None:
    """Join the process group described by torchrun's environment variables when ``WORLD_SIZE > 1``.

    Uses NCCL for ``device_type == "cuda"`` and gloo otherwise. On CUDA, each
    process takes the GPU numbered ``LOCAL_RANK`` and the function returns it.
    Returns None when no process group is started, or on CPU. Calling it again
    after the group exists does nothing.
    """
    if env_world_size() <= 1 or is_distributed():
        return _local_cuda_device() if device_type == "cuda" and is_distributed() else None
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {missing[0]} is not; start distributed runs with torchrun")
    device = None
    if device_type == "cuda":
        device = _local_cuda_device()
        torch.cuda.set_device(device)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    logger.debug("joined the %s process group as rank %d of %d", backend, rank(), world_size())
    return device


def _local_cuda_device() -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"process with LOCAL_RANK {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
            "start at most one process per GPU with torchrun --nproc_per_node"
        )
    return torch.device("cuda", local_rank)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Return whether this process writes files and logs: rank 0, or the only process."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if is_distributed():
        dist.destroy_process_group()


def broadcast_object(value):
    """Return rank 0's ``value`` on every process; ``value`` must be picklable."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def _collective_device() -> torch.device:
    # NCCL reduces only CUDA tensors, and gloo is used here for CPU tensors only.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Return the element-wise sum of ``tensor`` over all processes, on ``tensor``'s device.

    The input is not changed. With one process the function returns ``tensor`` itself.
    """
    if not is_distributed():
        return tensor
    device = _collective_device()
    buffer = tensor.detach().to(device, copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Return the element-wise maximum of ``tensor`` over all processes, on ``tensor``'s device."""
    if not is_distributed():
        return tensor
    buffer = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX)
    return buffer.to(tensor.device)


def all_reduce_accumulator(accumulator: PrototypeAccumulator) -> PrototypeAccumulator:
    """Replace the class sums and counts of ``accumulator`` in place by their totals over all processes.

    A process that saw no batch has no sums yet. It takes the embedding size
    from the other processes and contributes zeros.
    """
    if not is_distributed():
        return accumulator
    sizes = torch.tensor([0 if sums is None else sums.shape[1] for sums in accumulator.sums], dtype=torch.long)
    sizes = all_reduce_max(sizes)
    for m, size in enumerate(sizes.tolist()):
        if size == 0:
            # No process embedded anything for this modality, so the sums stay None
            # and PrototypeBank.update reports an empty prototype subset.
            continue
        sums = accumulator.sums[m]
        if sums is None:
            sums = torch.zeros(accumulator.num_classes, size, dtype=torch.float64)
        accumulator.sums[m] = all_reduce_sum(sums)
    accumulator.counts = all_reduce_sum(accumulator.counts)
    return accumulator


def reduce_weighted_means(metrics: Mapping[str, float], count: int) -> dict[str, float]:
    """Combine per-process means over ``count`` samples each into means over all samples.

    Every process must pass the same keys. With one process the metrics come back unchanged.
    """
    if not is_distributed():
        return dict(metrics)
    keys = list(metrics)
    totals = torch.tensor([metrics[key] * count for key in keys] + [float(count)], dtype=torch.float64)
    totals = all_reduce_sum(totals)
    samples = float(totals[-1])
    return {key: float(totals[i]) / samples for i, key in enumerate(keys)}
