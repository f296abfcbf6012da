"""pml-regularizers: deep-metric-learning methods that plug into pytorch-metric-learning.

The public names below are imported on first use (PEP 562), so that ``import pml_regularizers``
costs nothing until a name is used: the benchmark runner's command line checks a config before it
imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it ("" for a sub-module of the package).
_EXPORTS: dict[str, str] = {
    "SkewedMeanRegularizer": ".regularizers",
    "DVMLEmbedder": ".embedders",
    "DVMLOutput": ".embedders",
    "DVMLMiner": ".miners",
    "DVMLLoss": ".losses",
    "DVMLTrainer": ".trainers",
    "FlowEmbedder": ".embedders",
    "DuelingFlowEmbedder": ".embedders",
    "JacobianDeterminantRegularizer": ".regularizers",
    "JacobianDeterminantLoss": ".losses",
    "functional": "",
    "set_finite_checks": "._checks",
    "finite_checks_enabled": "._checks",
    "distributed_loss": ".distributed",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # the names as type checkers and readers see them (redundant aliases re-export)
    from . import functional as functional
    from ._checks import finite_checks_enabled as finite_checks_enabled
    from ._checks import set_finite_checks as set_finite_checks
    from .distributed import distributed_loss as distributed_loss
    from .embedders import DuelingFlowEmbedder as DuelingFlowEmbedder
    from .embedders import DVMLEmbedder as DVMLEmbedder
    from .embedders import DVMLOutput as DVMLOutput
    from .embedders import FlowEmbedder as FlowEmbedder
    from .losses import DVMLLoss as DVMLLoss
    from .losses import JacobianDeterminantLoss as JacobianDeterminantLoss
    from .miners import DVMLMiner as DVMLMiner
    from .regularizers import JacobianDeterminantRegularizer as JacobianDeterminantRegularizer
    from .regularizers import SkewedMeanRegularizer as SkewedMeanRegularizer
    from .trainers import DVMLTrainer as DVMLTrainer


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _EXPORTS[name]
    value = importlib.import_module(f".{name}" if not module else module, __name__)
    if module:
        value = getattr(value, name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
