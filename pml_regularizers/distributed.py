"""Data-parallel training with losses that have parameters of their own (proxies, class weights).

PML's ``DistributedLossWrapper`` computes the loss on the embeddings gathered from every process
and multiplies it by the world size, so that ``DistributedDataParallel``'s gradient average gives
the models the gradient of the global batch. The loss's own parameters are not in
``DistributedDataParallel``: every process computes their gradient on the same gathered batch,
multiplied by the world size, and each process starts from its own random initialisation. So,
with the wrapper alone, proxies take steps N times too large under SGD and differ between
processes (PML issues #218, #306, #710). :func:`distributed_loss` fixes both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytorch_metric_learning.losses import BaseMetricLossFunction, CrossBatchMemory
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
from torch import Tensor, nn
from torch import distributed as dist

__all__ = ["distributed_loss"]

_WRAPPED = "_pml_regularizers_distributed"  # set on a loss that distributed_loss has wrapped


def distributed_loss(loss: nn.Module, efficient: bool = False) -> DistributedLossWrapper:
    """PML's ``DistributedLossWrapper`` around ``loss``, with the loss's own parameters kept right.

    Call it once per process, before building the optimizer for the loss's parameters. Once the
    process group exists (``torch.distributed.init_process_group``) with two or more processes,
    the wrapper

    - copies rank 0's parameters and buffers of ``loss`` to every process, so that all start from
      the same proxies;
    - registers a gradient hook on each parameter of ``loss`` that divides by the world size,
      which undoes the wrapper's multiplication, so that each process holds the gradient of the
      global batch, the same on every process, and the proxies stay equal after each step.

    Both happen here when the process group already exists (a collective: every process must
    call this), and otherwise at the wrapper's first call after the group has been made (every
    process calls the loss at each step). Without a process group, or with one process, nothing
    is rescaled and the wrapper passes the loss through, as PML's does.

    Parameters
    ----------
    loss : torch.nn.Module
        A PML metric loss (``BaseMetricLossFunction``) or ``CrossBatchMemory``, not yet wrapped;
        its parameters include those of its regularizers.
    efficient : bool
        PML's ``efficient`` mode (each process's embeddings against all processes'). Only for a
        loss without parameters: there the processes' loss values differ, and their parameter
        gradients would need averaging rather than rescaling.

    Returns
    -------
    DistributedLossWrapper
        The wrapped loss; its ``loss`` attribute is ``loss``.

    Raises
    ------
    TypeError
        For anything but a PML metric loss instance (a loss's name, a class, a plain module).
    ValueError
        For ``efficient=True`` with a loss that has parameters, and for a loss wrapped before,
        by PML's wrapper or by this function (its gradients would be divided twice).

    Examples
    --------
    >>> loss_fn = distributed_loss(losses.ProxyAnchorLoss(num_classes, embedding_size))  # doctest: +SKIP
    >>> loss_optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.01)  # doctest: +SKIP
    """
    if isinstance(loss, DistributedLossWrapper):
        raise ValueError(
            "loss is already a DistributedLossWrapper; give distributed_loss the PML loss itself "
            "(the wrapper's .loss), once, and use what it returns"
        )
    if not isinstance(loss, (BaseMetricLossFunction, CrossBatchMemory)):
        what = f"the class {loss.__name__}" if isinstance(loss, type) else f"a {type(loss).__name__}"
        raise TypeError(
            f"loss must be a PML metric loss instance (BaseMetricLossFunction or CrossBatchMemory), got {what}: "
            "build the loss first, e.g. distributed_loss(losses.ProxyAnchorLoss(num_classes, embedding_size))"
        )
    if getattr(loss, _WRAPPED, False):
        raise ValueError(
            "loss has been given to distributed_loss before; wrap it once (its gradients would be "
            "divided by the world size twice)"
        )
    params = [p for p in loss.parameters() if p.requires_grad]
    if efficient and params:
        raise ValueError(
            f"efficient=True needs a loss without parameters; {type(loss).__name__} has "
            f"{len(params)}: use efficient=False"
        )
    wrapper = _SyncedLossWrapper(loss, efficient=efficient)
    setattr(loss, _WRAPPED, True)
    wrapper.sync()
    return wrapper


class _SyncedLossWrapper(DistributedLossWrapper):
    """PML's wrapper that, once a process group exists, syncs the loss's parameters from rank 0
    and rescales their gradients (:func:`distributed_loss`)."""

    def __init__(self, loss: nn.Module, efficient: bool = False) -> None:
        super().__init__(loss, efficient=efficient)
        self._synced = False

    def sync(self) -> None:
        """Broadcast rank 0's parameters and buffers and register the gradient hooks, once, as
        soon as a process group exists; nothing before, nor with one process."""
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        self._synced = True
        world = dist.get_world_size()
        if world == 1:
            return
        for tensor in [*self.loss.parameters(), *self.loss.buffers()]:
            dist.broadcast(tensor.data, src=0)
        for p in self.loss.parameters():
            if p.requires_grad:
                p.register_hook(_divider(world))

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        self.sync()
        return super().forward(*args, **kwargs)


def _divider(world: int) -> Callable[[Tensor], Tensor]:
    def divide(grad: Tensor) -> Tensor:
        return grad / world

    return divide
