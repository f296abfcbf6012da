"""pml-regularizers: deep-metric-learning methods that plug into pytorch-metric-learning."""

from . import functional
from .regularizers import SkewedMeanRegularizer

__version__ = "0.1.0"

__all__ = ["SkewedMeanRegularizer", "functional", "__version__"]
