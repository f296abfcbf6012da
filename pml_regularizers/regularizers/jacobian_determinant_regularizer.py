"""Jacobian-determinant regularizer on a flow metric layer."""

from __future__ import annotations

import warnings
from typing import cast

from pytorch_metric_learning.regularizers import BaseRegularizer
from pytorch_metric_learning.utils import common_functions as c_f
from torch import Tensor

from .. import functional as F
from .._arguments import finite_float
from .._checks import check_finite, check_rows
from .._pml_glue import ModuleReference
from ..embedders.dueling_flow_embedder import DuelingFlowEmbedder
from ..embedders.flow_embedder import FlowEmbedder


class JacobianDeterminantRegularizer(BaseRegularizer):
    """Penalises :math:`\\log|\\det J_f|` of a flow metric layer on the batch it embedded.

    With :math:`\\ell_b = \\log|\\det J_f(h_b)|` for the trunk features :math:`h_b` of the batch
    (read from the flow's forward that returned the embeddings, not recomputed) and :math:`r_b = \\ell_b - \\tau`,

    .. math::

        R = \\frac{1}{N}\\sum_{b=1}^{N} \\rho(r_b), \\qquad
        \\rho(r) \\in \\{\\, r \\ (\\text{signed}),\\ r^2 \\ (\\text{square}),\\
        \\max(r, 0) \\ (\\text{hinge}) \\,\\}

    (the mean is the default reducer's). The idea: pulling same-class samples together can
    distort the feature space and raise its local expansion; a metric layer whose volume change is
    kept small limits that. :math:`\\ell_b` is the log of the product of the Jacobian's singular
    values, so it bounds their geometric mean, not the largest one.

    Source: "Determinant Regularization for Deep Metric Learning" (ICLR 2023 submission,
    https://openreview.net/forum?id=NUBuJsAq1U). Published: a flow metric layer and a
    regularizer that decreases its determinant term. Reconstructed: :math:`R` as the batch mean of
    the log-determinant, and the square and hinge forms, added because the signed form has no floor
    but the flow's clamp and a cosine-type loss ignores scale, so shrinking everything would
    minimise it for free. The paper's dueling branches and interpolated points need labels, which
    PML regularizers do not get: :class:`~pml_regularizers.JacobianDeterminantLoss` adds them.

    Parameters
    ----------
    embedder : FlowEmbedder or DuelingFlowEmbedder
        The flow metric layer whose forward produced the embeddings (branch 1 of a dueling pair),
        named as :class:`~pml_regularizers.JacobianDeterminantLoss` and
        :class:`~pml_regularizers.DVMLLoss` name theirs. It is held by reference, not as a
        submodule: it adds nothing to this module's ``parameters()`` or ``state_dict()``, and is
        not moved by ``.to()``. ``flow=``, its former name, still works, with a FutureWarning.
    penalty : {"square", "hinge", "signed"}
        The form :math:`\\rho`. Default ``"square"``, which acts whichever way the flow changes
        volume: the signed form has no floor, so a cosine-type loss lets the flow shrink everything
        to lower it, and a hinge at 0 never sees a flow that contracts. The validation search behind
        the choice is on the results page (``docs/results.md``).
    target : float
        The target :math:`\\tau`; 0 (volume-preserving) by default.
    **kwargs
        ``collect_stats``, ``reducer`` and ``distance``, as for every PML regularizer (the distance
        is not used).

    Notes
    -----
    - Default distance: :class:`~pytorch_metric_learning.distances.LpDistance` (unused).
    - Default reducer: :class:`~pytorch_metric_learning.reducers.MeanReducer`.
    - Reducer input: ``loss``, ``element``: one value per embedding.
    - Use it as ``embedding_regularizer=`` of any PML loss that passes its batch to the embedding
      regularizer unchanged, and give the loss the tensor the flow returned: the log-determinants
      are found from that tensor (:meth:`FlowEmbedder.logdet_of
      <pml_regularizers.FlowEmbedder.logdet_of>`), so other forwards in between (``ref_emb``, a
      second view, validation) do not matter; embeddings the flow did not return are refused.
      Under PML's ``DistributedLossWrapper`` the gathered batch is matched with the gathered
      log-determinants.
    - The log-determinant is in the flow's parameter dtype; the value returned is too (PML casts
      it to the embeddings' dtype when it adds it to the loss).
    - Stats (with ``collect_stats=True``): ``logdet_mean``, ``logdet_std`` (population),
      ``logdet_min`` and ``logdet_max`` of :math:`\\ell_b` over the batch.
    """

    def __init__(
        self,
        embedder: FlowEmbedder | DuelingFlowEmbedder | None = None,
        penalty: F.LogdetPenalty = "square",
        target: float = 0.0,
        *,
        flow: FlowEmbedder | DuelingFlowEmbedder | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if flow is not None:
            if embedder is not None:
                raise ValueError("give the flow as embedder only (flow is its former name)")
            warnings.warn(
                "JacobianDeterminantRegularizer(flow=...) is now JacobianDeterminantRegularizer(embedder=...); "
                "flow= will be removed",
                FutureWarning,
                stacklevel=2,
            )
            embedder = flow
        if not isinstance(embedder, (FlowEmbedder, DuelingFlowEmbedder)):
            raise ValueError(f"embedder must be a FlowEmbedder or DuelingFlowEmbedder, got {type(embedder).__name__}")
        if penalty not in F.LOGDET_PENALTIES:
            raise ValueError(f"penalty must be one of {F.LOGDET_PENALTIES}, got {penalty!r}")
        target = finite_float("target", target)
        self._embedder = ModuleReference(embedder)
        self.penalty = penalty
        self.target = target
        self.add_to_recordable_attributes(list_of_names=["target"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["logdet_mean", "logdet_std", "logdet_min", "logdet_max"], is_stat=True
        )

    @property
    def embedder(self) -> FlowEmbedder | DuelingFlowEmbedder:
        """The regularised flow."""
        return cast("FlowEmbedder | DuelingFlowEmbedder", self._embedder.module)

    def compute_loss(self, x: Tensor) -> dict:
        check_rows(x, "x", self.embedder.out_features, "out_features")
        if len(x) == 0:  # PML's convention for a loss with nothing to reduce
            return {"loss": {"losses": 0, "indices": None, "reduction_type": "already_reduced"}}
        try:
            logdet = self.embedder.logdet_of(x)
        except ValueError:  # a NaN or infinity is named before the flow's "not my output"
            check_finite(type(self).__name__, {"x": x})
            raise
        losses = F.logdet_penalty(logdet, self.penalty, self.target)
        check_finite(type(self).__name__, {"x": x}, [losses], {"target": self.target})
        if self.collect_stats:
            values = logdet.detach()
            self.logdet_mean = float(values.mean())
            self.logdet_std = float(values.std(correction=0))
            self.logdet_min = float(values.min())
            self.logdet_max = float(values.max())
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(x),
                "reduction_type": "element",
            }
        }
