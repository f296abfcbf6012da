"""Regularizers usable as PML's ``weight_regularizer=`` and ``embedding_regularizer=``."""

from .jacobian_determinant_regularizer import JacobianDeterminantRegularizer
from .skewed_mean_regularizer import SkewedMeanRegularizer

__all__ = ["SkewedMeanRegularizer", "JacobianDeterminantRegularizer"]
