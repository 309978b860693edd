"""Encoders, fusion heads and their registries; importing this package registers the built-in ones."""

from modalbalance.models import encoders, fusion  # noqa: F401  (imported to fill ENCODERS and FUSIONS)
