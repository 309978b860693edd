"""modalbalance: balanced multimodal learning in PyTorch.

The public names load on first use, so ``import modalbalance`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "PMR": "modalbalance.pmr",
    "PMRTerms": "modalbalance.pmr",
    "PrototypeBank": "modalbalance.pmr",
    "train": "modalbalance.training.runner",
    "load_config": "modalbalance.training.config",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'modalbalance' has no attribute {name!r}")
