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

from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
from torch import Tensor, nn
from torch import distributed as dist

__all__ = ["distributed_loss"]

_WRAPPED = "_pml_regularizers_world_size"  # set on a loss whose gradients are already rescaled


def distributed_loss(loss: nn.Module, efficient: bool = False) -> DistributedLossWrapper:
    """PML's ``DistributedLossWrapper`` around ``loss``, with the loss's own parameters kept right.

    Call it once per process, after ``torch.distributed.init_process_group`` and before building
    the optimizer for the loss's parameters. It

    - copies rank 0's parameters and buffers of ``loss`` to every process (a collective: every
      process must call it), so that all start from the same proxies;
    - registers a gradient hook on each parameter of ``loss`` that divides by the world size,
      which undoes the wrapper's multiplication, so that each process holds the gradient of the
      global batch, the same on every process, and the proxies stay equal after each step.

    Without a process group (or with one process) nothing is rescaled and the wrapper passes the
    loss through, as PML's does.

    Parameters
    ----------
    loss : torch.nn.Module
        A PML metric loss (``BaseMetricLossFunction``) or ``CrossBatchMemory``; its parameters
        include those of its regularizers.
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
    ValueError
        For ``efficient=True`` with a loss that has parameters, and for a loss wrapped before
        (its gradients would be divided twice).

    Examples
    --------
    >>> loss_fn = distributed_loss(losses.ProxyAnchorLoss(num_classes, embedding_size))  # doctest: +SKIP
    >>> loss_optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.01)  # doctest: +SKIP
    """
    params = [p for p in loss.parameters() if p.requires_grad]
    if getattr(loss, _WRAPPED, None) is not None:
        raise ValueError(
            "loss has been given to distributed_loss before; wrap it once (its gradients would be "
            "divided by the world size twice)"
        )
    if efficient and params:
        raise ValueError(
            f"efficient=True needs a loss without parameters; {type(loss).__name__} has "
            f"{len(params)}: use efficient=False"
        )
    wrapper = DistributedLossWrapper(loss, efficient=efficient)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return wrapper
    for tensor in [*loss.parameters(), *loss.buffers()]:
        dist.broadcast(tensor.data, src=0)
    for p in params:
        p.register_hook(_divider(world))
    setattr(loss, _WRAPPED, world)
    return wrapper


def _divider(world: int) -> Callable[[Tensor], Tensor]:
    def divide(grad: Tensor) -> Tensor:
        return grad / world

    return divide
