"""The benchmark runner under ``torchrun``: this process's place in the job (:class:`Dist`), joining
the job (:func:`init_distributed`), and wrapping what a fold trains for it (:func:`distribute`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_metric_learning.utils import distributed as pml_dist
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ...distributed import distributed_loss
from ..errors import ConfigError, UserError
from ..models.build import Parts, trainable

__all__ = ["Dist", "distribute", "init_distributed"]


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here (nothing when not distributed).

        On gloo this is :func:`torch.distributed.monitored_barrier`, not ``barrier``. A gloo
        barrier (like any collective on a tensor made in Python) hands Python objects to gloo's
        worker threads, which free them after the call has returned; when that happens after
        Python has begun to shut down, the process aborts ("terminate called without an active
        exception"). ``monitored_barrier`` hands over none and waits without holding the GIL, so
        gloo can free what earlier collectives left meanwhile; it also names a rank that never
        arrives.
        """
        if self.world == 1:
            return
        if dist.get_backend() == "gloo":
            dist.monitored_barrier()
        else:
            dist.barrier()

    def on_main(self, action: Callable[[], Any]) -> None:
        """Run ``action`` on rank 0 only; a :class:`UserError` it raises is raised on every rank,
        so that no rank waits for a rank 0 that has given up."""
        error = None
        if self.main:
            try:
                action()
            except UserError as err:
                error = err
        if self.world > 1:
            shared = [None if error is None else str(error)]
            dist.broadcast_object_list(shared, src=0)
            if error is None and shared[0] is not None:
                error = UserError(shared[0])
        if error is not None:
            raise error


def init_distributed(batch_size: int, device: str) -> Dist:
    """Join the torchrun job described by the environment (WORLD_SIZE, RANK, LOCAL_RANK), whose
    processes share each global batch of ``batch_size``; NCCL unless ``device`` is the CPU or
    CUDA is missing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if batch_size % world:
        raise ConfigError(f"batch_size must be divisible by the number of processes ({world}), got {batch_size}")
    if not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank=dist.get_rank(), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def distribute(
    parts: Parts, ddp: Dist, device: torch.device
) -> tuple[dict[str, torch.nn.Module], dict[str, torch.nn.Module], torch.nn.Module | None]:
    """Wrap models, metric loss and miner for a torchrun job; unchanged on one process.

    Models with trainable parameters go into DistributedDataParallel (which broadcasts rank 0's
    weights). PML's ``DistributedLossWrapper`` computes the loss on the embeddings of all ranks
    and multiplies it by the world size so that DDP's gradient average is the gradient of the
    global batch; the loss's own parameters (proxies, class weights) see that same multiplied
    loss on every rank, so :func:`pml_regularizers.distributed_loss` divides their gradient by the
    world size and starts them from rank 0's values.
    """
    if ddp.world == 1:
        return parts.models, parts.loss_funcs, parts.miner
    ids = [device.index] if device.type == "cuda" else None
    models = {k: DistributedDataParallel(m, device_ids=ids) if trainable(m) else m for k, m in parts.models.items()}
    loss_funcs = dict(parts.loss_funcs)
    loss_funcs["metric_loss"] = distributed_loss(loss_funcs["metric_loss"])
    miner = pml_dist.DistributedMinerWrapper(parts.miner) if parts.miner is not None else None
    return models, loss_funcs, miner
