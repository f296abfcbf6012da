"""pml-regularizers: deep-metric-learning methods that plug into pytorch-metric-learning."""

from . import functional
from ._checks import finite_checks_enabled, set_finite_checks
from .distributed import distributed_loss
from .embedders import DuelingFlowEmbedder, DVMLEmbedder, DVMLOutput, FlowEmbedder
from .losses import DVMLLoss, JacobianDeterminantLoss
from .miners import DVMLMiner
from .regularizers import JacobianDeterminantRegularizer, SkewedMeanRegularizer
from .trainers import DVMLTrainer

__version__ = "0.1.0"

__all__ = [
    "SkewedMeanRegularizer",
    "DVMLEmbedder",
    "DVMLOutput",
    "DVMLMiner",
    "DVMLLoss",
    "DVMLTrainer",
    "FlowEmbedder",
    "DuelingFlowEmbedder",
    "JacobianDeterminantRegularizer",
    "JacobianDeterminantLoss",
    "functional",
    "set_finite_checks",
    "finite_checks_enabled",
    "distributed_loss",
    "__version__",
]
