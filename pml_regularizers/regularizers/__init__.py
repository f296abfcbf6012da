"""Regularizers usable as PML's ``weight_regularizer=`` and ``embedding_regularizer=``."""

from .skewed_mean_regularizer import SkewedMeanRegularizer

__all__ = ["SkewedMeanRegularizer"]
