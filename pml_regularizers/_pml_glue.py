"""What the package's modules share to fit into PML: loss entries and modules held by reference."""

from __future__ import annotations

from torch import Tensor, nn


def already_reduced(value: Tensor) -> dict:
    """A PML loss entry for a scalar the module has reduced itself (the reducer passes it on)."""
    return {"losses": value, "indices": None, "reduction_type": "already_reduced"}


class ModuleReference:
    """Holds a module by reference, hidden from ``nn.Module`` registration (so the module's
    parameters stay out of the holder's ``parameters()`` and ``state_dict()``) and from
    record-keeper's recursive logging, which walks modules, dicts, lists and tuples.

    The package's losses and regularizers hold the embedder they read this way: the embedder
    is a model the user trains with its own optimizer (PML's ``models`` entry), and the holder's
    own parameters are those of the loss alone, as for every PML loss."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = module
