"""Encoders, fusion heads, whole models and their registries; importing this package registers the built-in ones."""

# Imported to fill ENCODERS, FUSIONS and MODELS.
from modalbalance.models import centralnet, encoders, fusion, mmtm, resnet, small_cnn  # noqa: F401
