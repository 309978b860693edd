"""Balancing methods; importing this package registers every built-in method in ``METHODS``."""

from modalbalance.methods import acc, base, gradient_blending, modality_drop, ogm_ge, pmr  # noqa: F401  (imported for registration)
from modalbalance.methods.base import METHODS, BalancingMethod, TrainingContext

__all__ = ["METHODS", "BalancingMethod", "TrainingContext"]
