"""Data set loaders and their registry; importing this package registers the built-in data sets."""

from modalbalance.data import av_datasets, av_digits, cgmnist  # noqa: F401  (imported to fill DATASETS)
