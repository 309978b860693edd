"""The run directory: its default name, protection of earlier runs, and what ``--resume`` accepts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Mapping

from modalbalance.errors import ConfigError
from modalbalance.training.checkpoint import write_text

# Files that mark a directory as containing a run. config.yaml is written first,
# so even a run stopped in its first epoch is protected and can be resumed.
RUN_FILES = ("config.yaml", "metrics.jsonl", "steps.jsonl", "summary.json", "last.pt")


def default_run_dir(config: Mapping) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config['data']['name']}_{config['method']['name']}_{config['model']['fusion']}_{stamp}"


def prepare_run_dir(path: Path, resume: bool = False) -> Path:
    """Create the run directory, or raise ConfigError if it already contains a run.

    With ``resume`` the directory must contain an unfinished run instead: a
    ``config.yaml`` and no ``summary.json``.
    """
    if resume:
        check_resumable(path)
        return path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output path {path} exists and is not a directory; choose another --out")
    existing = [name for name in RUN_FILES if (path / name).exists()]
    if existing:
        raise ConfigError(
            f"run directory {path} already contains a run ({existing[0]}); choose another --out, "
            f"or continue an unfinished run with --resume {path}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create run directory {path}: {error.strerror}; choose another --out") from None
    return path


def check_resumable(path: Path) -> None:
    """Raise ConfigError unless ``path`` contains a run that ``--resume`` can continue."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"cannot resume: {path} is a file, not a run directory; pass the --out directory of an earlier train command")
    if not path.is_dir():
        raise ConfigError(f"cannot resume: run directory {path} not found; pass the --out directory of an earlier train command")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"cannot resume: {path} contains no run (config.yaml is missing); pass the --out directory of an earlier train command")
    if (path / "summary.json").exists():
        raise ConfigError(f"cannot resume: the run in {path} has finished (summary.json exists); start a new run with another --out")


def truncate_jsonl(path: Path, last_epoch: int) -> None:
    """Keep only the records of epochs up to ``last_epoch`` in a JSONL log, dropping a torn last line too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A line cut short by the kill; its epoch is rerun.
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] <= last_epoch:
            kept.append(line + "\n")
    write_text("".join(kept), path)
