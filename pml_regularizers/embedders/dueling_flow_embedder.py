"""Two flow branches on one trunk: the dueling pair of the determinant-regularization method."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .flow_embedder import Coupling, FlowEmbedder


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
    in_features, out_features, num_blocks, coupling, hidden_features, clamp
        As for :class:`FlowEmbedder`; both branches get the same.

    Notes
    -----
    :class:`~pml_regularizers.JacobianDeterminantRegularizer` given this module reads branch 1,
    like every method here that does not name a branch.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_blocks: int = 4,
        coupling: Coupling = "affine",
        hidden_features: int | Sequence[int] = 512,
        clamp: float = 2.0,
    ) -> None:
        super().__init__()
        kwargs = dict(
            num_blocks=num_blocks, coupling=coupling, hidden_features=hidden_features, clamp=clamp
        )
        self.branch1 = FlowEmbedder(in_features, out_features, **kwargs)
        self.branch2 = FlowEmbedder(in_features, out_features, **kwargs)
        self.in_features = in_features
        self.out_features = out_features
        self._branch2_ran = False

    def forward(self, x: Tensor) -> Tensor:
        """Branch 1's embeddings of ``x``; with gradients enabled, branch 2 also runs on ``x`` and
        caches its log-determinant."""
        z = self.branch1(x)
        self._branch2_ran = torch.is_grad_enabled()
        if self._branch2_ran:
            self.branch2(x)
        return z

    def inverse(self, z: Tensor) -> Tensor:
        """Branch 1's inverse (see :meth:`FlowEmbedder.inverse`)."""
        return self.branch1.inverse(z)

    def forward_and_logdet(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Branch 1's embeddings and log-determinants, without touching the cache."""
        return self.branch1.forward_and_logdet(x)

    @property
    def latest_features(self) -> Tensor:
        """The input of the latest forward."""
        return self.branch1.latest_features

    @property
    def latest_logdet(self) -> Tensor:
        """Branch 1's per-sample log-determinant of the latest forward."""
        return self.branch1.latest_logdet

    def logdet_for_batch(self, rows: int) -> Tensor:
        """Branch 1's (see :meth:`FlowEmbedder.logdet_for_batch`)."""
        return self.branch1.logdet_for_batch(rows)

    def branch2_logdet_for_batch(self, rows: int) -> Tensor:
        """Branch 2's log-determinants of the latest forward, matched to ``rows`` embeddings as in
        :meth:`FlowEmbedder.logdet_for_batch`.

        Raises
        ------
        RuntimeError
            If branch 2 did not run in the latest forward (it runs only with gradients enabled).
        """
        if not self._branch2_ran:
            raise RuntimeError(
                "branch 2 did not run in the latest forward: it runs only when gradients are "
                "enabled (not under torch.no_grad)"
            )
        return self.branch2.logdet_for_batch(rows)
