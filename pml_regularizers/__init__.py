"""pml-regularizers: deep-metric-learning methods that plug into pytorch-metric-learning."""

from . import functional
from .regularizers import JacobianDeterminantRegularizer, SkewedMeanRegularizer
from .embedders import DuelingFlowEmbedder, FlowEmbedder
from .losses import JacobianDeterminantLoss
from .embedders import DVMLEmbedder, DVMLOutput
from .miners import DVMLMiner
from .losses import DVMLLoss
from .trainers import DVMLTrainer

__version__ = "0.1.0"

__all__ = ["SkewedMeanRegularizer", "DVMLEmbedder", "DVMLOutput", "DVMLMiner", "DVMLLoss", "DVMLTrainer", "FlowEmbedder", "DuelingFlowEmbedder", "JacobianDeterminantRegularizer", "JacobianDeterminantLoss", "functional", "__version__"]
