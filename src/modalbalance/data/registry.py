"""The data set registry.

A builder has the signature ``build(root, split, seed, **params) -> MultimodalDataset``
where ``split`` is ``"train"``, ``"val"`` or ``"test"`` and ``root`` may be None
for data sets that need no files. Builders raise ``DataError`` naming the file
for missing or malformed data and ``ConfigError`` for unknown splits or params.
"""

from modalbalance.data.base import MultimodalDataset
from modalbalance.registry import Registry

DATASETS: Registry[MultimodalDataset] = Registry("dataset")
