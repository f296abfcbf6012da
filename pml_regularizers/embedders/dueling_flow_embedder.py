"""Two flow branches on one trunk: the dueling pair of the determinant-regularization method."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .flow_embedder import FlowEmbedder
from .forward_records import FlowForward, ForwardRecords, gathered


class DuelingFlowEmbedder(nn.Module):
    """A pair of :class:`FlowEmbedder` branches on the same trunk features.

    Branch 1 gives the embedding, at training and at test time; branch 2 runs beside it (only when
    gradients are enabled, so never inside PML's testers) to supply the second log-determinant of
    the dueling objective

    .. math::

        L = L_\\mathrm{DML}(Z_1) + \\lambda_1 R(Z_1) - \\lambda_2 R(Z_2),

    which :class:`~pml_regularizers.JacobianDeterminantLoss` computes: branch 1's determinant term
    is penalised, branch 2's rewarded, and both reach the shared trunk.

    Source: "Determinant Regularization for Deep Metric Learning" (ICLR 2023 submission,
    https://openreview.net/forum?id=NUBuJsAq1U). Published: two flow branches on one trunk, the
    first penalised and used at test time, the second rewarded, combined as above. Reconstructed:
    the branches have the same architecture and independent parameters, and the metric loss is
    taken on branch 1 only (the formula has one :math:`L_\\mathrm{DML}` term).

    Parameters
    ----------
    in_features, out_features : int
        As for :class:`FlowEmbedder`.
    **flow_options
        :class:`FlowEmbedder`'s keyword arguments (``num_blocks``, ``coupling``,
        ``hidden_features``, ``clamp``), with its defaults; both branches get the same.

    Notes
    -----
    :class:`~pml_regularizers.JacobianDeterminantRegularizer` given this module reads branch 1,
    like every method here that does not name a branch. Branch 2's record of a forward is tied
    to the embeddings branch 1 returned (:meth:`branch2_logdet_of`).
    """

    def __init__(self, in_features: int, out_features: int, **flow_options: Any) -> None:
        super().__init__()
        self.branch1 = FlowEmbedder(in_features, out_features, **flow_options)
        self.branch2 = FlowEmbedder(in_features, out_features, **flow_options)
        self.in_features = in_features
        self.out_features = out_features
        self._branch2_records = ForwardRecords()

    def forward(self, x: Tensor) -> Tensor:
        """Branch 1's embeddings of ``x``; with gradients enabled, branch 2 also runs on ``x`` and
        its log-determinant is recorded with the returned embeddings."""
        z = self.branch1(x)
        if torch.is_grad_enabled():
            record, _ = self.branch2.find_forward(self.branch2(x))
            self._branch2_records.add(z, FlowForward(x, record.logdet, z.detach()))
        return z

    def inverse(self, z: Tensor) -> Tensor:
        """Branch 1's inverse (see :meth:`FlowEmbedder.inverse`)."""
        return self.branch1.inverse(z)

    def forward_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Branch 1's embeddings and log-determinants, without recording them."""
        return self.branch1.forward_and_logdet(x)

    @property
    def latest_features(self) -> Tensor:
        """The input of the latest forward."""
        return self.branch1.latest_features

    @property
    def latest_logdet(self) -> Tensor:
        """Branch 1's per-sample log-determinant of the latest forward."""
        return self.branch1.latest_logdet

    def find_forward(self, embeddings: Tensor) -> tuple[FlowForward, bool]:
        """Branch 1's forward that returned ``embeddings`` (see
        :meth:`FlowEmbedder.find_forward`)."""
        return self.branch1.find_forward(embeddings)

    def logdet_of(self, embeddings: Tensor) -> Tensor:
        """Branch 1's log-determinants of ``embeddings`` (see :meth:`FlowEmbedder.logdet_of`)."""
        return self.branch1.logdet_of(embeddings)

    def branch2_logdet_of(self, embeddings: Tensor) -> Tensor:
        """Branch 2's log-determinants on the input of the forward that returned ``embeddings``,
        matched to them as in :meth:`FlowEmbedder.logdet_of`.

        Raises
        ------
        RuntimeError
            If branch 2 did not run in that forward (it runs only with gradients enabled).
        ValueError
            If ``embeddings`` did not come from a forward of this module.
        """
        self.branch1.find_forward(embeddings)  # raises if the embeddings are not this module's
        try:
            record, is_gathered = self._branch2_records.find(embeddings, "branch 2")
        except (RuntimeError, ValueError):
            raise RuntimeError(
                "branch 2 did not run in the forward that returned these embeddings: it runs "
                "only when gradients are enabled (not under torch.no_grad)"
            ) from None
        return gathered(record.logdet) if is_gathered else record.logdet
