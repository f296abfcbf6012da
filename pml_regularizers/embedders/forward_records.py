"""What a flow's forward leaves for its regularizer, found again from the embeddings it returned."""

from __future__ import annotations

from typing import NamedTuple

import torch
from pytorch_metric_learning.utils.distributed import all_gather, is_distributed
from torch import Tensor
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["FlowForward", "ForwardRecords", "gathered"]


class FlowForward(NamedTuple):
    """One forward of a flow metric layer."""

    features: Tensor
    """The forward's input (trunk features), with its autograd graph."""
    logdet: Tensor
    """Per-sample :math:`\\log|\\det J|`, shape ``(N,)``, with its autograd graph."""
    output: Tensor
    """The embeddings the forward returned, detached (matched against copies of them)."""


class ForwardRecords:
    """The forwards of one flow, each found from the embeddings tensor it returned.

    A record lives as long as the embeddings tensor it was returned with (a weak key), so any
    number of forwards may run between the one that made a batch's embeddings and the loss on
    them (a ``ref_emb`` batch, a second view, a validation batch under ``torch.no_grad``) without
    the loss reading the wrong log-determinants. The latest record is also kept strongly, as the
    :attr:`latest` forward.

    :meth:`find` matches, in order: the very tensor a forward returned; a tensor equal to one
    (a copy, such as DistributedDataParallel's output with ``find_unused_parameters=True``);
    under ``torch.distributed``, a tensor whose first rows equal one and that holds
    ``world_size`` times as many rows (the batch PML's ``DistributedLossWrapper`` gathers, this
    rank's rows first). The two comparisons read values, so they wait for the device; the first
    costs nothing. Records are never pickled or deep-copied: a copy starts empty.
    """

    def __init__(self) -> None:
        self._by_output: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.latest: FlowForward | None = None

    def add(self, embeddings: Tensor, record: FlowForward) -> None:
        """Record ``record`` as the forward that returned ``embeddings``."""
        self._by_output[embeddings] = record
        self.latest = record

    def find(self, embeddings: Tensor, owner: str) -> tuple[FlowForward, bool]:
        """The forward that returned ``embeddings``, and whether they are its gathered form.

        Parameters
        ----------
        embeddings : Tensor
            What the loss received.
        owner : str
            The flow's name, for the error message.

        Returns
        -------
        (FlowForward, bool)
            The record, and True when ``embeddings`` is the record's output followed by the other
            ranks' rows.

        Raises
        ------
        RuntimeError
            If no forward has run.
        ValueError
            If ``embeddings`` matches no recorded forward.
        """
        record = self._by_output.get(embeddings)
        if record is not None:
            return record, False
        if self.latest is None:
            raise RuntimeError(
                f"{owner} has not run yet: call it on the batch before asking for its "
                "log-determinant (the regularizer and loss read the forward that returned the "
                "embeddings they get)"
            )
        world = torch.distributed.get_world_size() if is_distributed() else 1
        rows = embeddings.detach()
        for record in [*self._by_output.values(), self.latest]:
            out = record.output
            if out.shape[1:] != rows.shape[1:] or (out.dtype, out.device) != (rows.dtype, rows.device):
                continue
            n = out.shape[0]
            if rows.shape[0] == n and torch.equal(rows, out):
                return record, False
            if world > 1 and rows.shape[0] == world * n and torch.equal(rows[:n], out):
                return record, True
        raise ValueError(
            f"the embeddings ({tuple(embeddings.shape)}) were not returned by {owner}'s forward "
            "(nor gathered from it by PML's DistributedLossWrapper): pass the tensor the flow "
            "returned to the loss unchanged, not a slice, a concatenation or a rescaled copy"
        )

    def __reduce__(self) -> tuple:
        return (ForwardRecords, ())


def gathered(values: Tensor) -> Tensor:
    """This rank's per-sample ``values`` followed by the other ranks' in rank order, the order of
    PML's ``DistributedLossWrapper``; the other ranks' carry no gradient, like the gathered
    embeddings."""
    return torch.cat([values, all_gather(values.detach().contiguous())])
