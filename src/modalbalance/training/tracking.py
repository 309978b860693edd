"""Optional TensorBoard scalars beside the always-written JSONL logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

logger = logging.getLogger("modalbalance")


class TensorBoardLogger:
    """Write each epoch's numeric metrics as TensorBoard scalars, or do nothing when TensorBoard is not installed."""

    def __init__(self, log_dir: Path, enabled: bool, start_epoch: int = 0) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("TensorBoard is not installed, so only metrics.jsonl is written; pip install 'modalbalance[tensorboard]' to add it")
            return
        # A resumed run drops the events that the interrupted run wrote at or after its restart epoch.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch if start_epoch > 0 else None)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        epoch = record["epoch"]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
