"""Loss modules for plain training loops."""

from .dvml_loss import DVMLLoss
from .jacobian_determinant_loss import JacobianDeterminantLoss

__all__: list[str] = ["DVMLLoss", "JacobianDeterminantLoss"]
