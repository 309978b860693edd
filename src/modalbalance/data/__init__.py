"""Data set loaders and their registry; importing this package registers the built-in data sets."""

from modalbalance.data import cgmnist, idx  # noqa: F401  (cgmnist fills DATASETS)
