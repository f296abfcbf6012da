"""The determinant-regularization method in full: a PML loss plus the flow's determinant terms."""

from __future__ import annotations

import math
from typing import Literal, cast

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from torch import Tensor

from .. import functional as F
from .._arguments import finite_float
from .._checks import check_finite, check_rows
from .._pml_glue import ModuleReference, already_reduced
from ..embedders.dueling_flow_embedder import DuelingFlowEmbedder
from ..embedders.flow_embedder import FlowEmbedder
from ..embedders.forward_records import FlowForward, gathered

_REWARDS = ("signed", "hinge")


class JacobianDeterminantLoss(BaseMetricLossFunction):
    """A PML loss on branch 1's embeddings, plus the determinant terms of one or two flow branches.

    .. math::

        L = L_\\mathrm{DML}(Z_1) + \\lambda_1 R_1 + \\lambda_2 R_2, \\qquad
        R_1 = \\operatorname{mean}_{p \\in P} \\rho_1(\\ell^{(1)}_p - \\tau_1), \\qquad
        R_2 = \\operatorname{mean}_{p \\in P} \\rho_2(\\tau_2 - \\ell^{(2)}_p),

    where :math:`\\ell^{(k)}_p = \\log|\\det J_{f_k}(h_p)|` for flow branch :math:`k`,
    :math:`\\rho_1` is one of the forms of :func:`~pml_regularizers.functional.logdet_penalty`
    and :math:`\\rho_2(r) = r` (``"signed"``, giving the paper's :math:`-\\lambda_2 R(Z_2)` up to a
    constant) or :math:`\\max(r, 0)` (``"hinge"``). The points :math:`P` are the batch's trunk
    features :math:`h_b` and, when ``interpolation_eps`` is set, one point per sample between it
    and a random other sample of its class
    (:func:`~pml_regularizers.functional.same_class_interpolation`):

    .. math::

        \\tilde h_i = h_i + \\varepsilon\\, u_i\\, (h_j - h_i), \\qquad u_i \\sim U(0, 1),

    each counted once in the means (samples with no same-class partner add no point). Gradients
    reach the flows and, through :math:`h`, the trunk.

    Source: "Determinant Regularization for Deep Metric Learning" (ICLR 2023 submission,
    https://openreview.net/forum?id=NUBuJsAq1U). Published: the flow metric layer, the dueling
    pair (branch 1 penalised and used at test time, branch 2 rewarded,
    :math:`L = L_\\mathrm{DML} + \\lambda_1 R(Z_1) - \\lambda_2 R(Z_2)`) and the interpolated points
    :math:`\\tilde h`. Reconstructed: :math:`R` as a mean of log-determinants over the batch and
    the interpolated points together, one interpolated point per sample with a uniformly drawn
    partner, the hinge and square forms, the metric loss on branch 1 only, and every default.

    Parameters
    ----------
    loss : BaseMetricLossFunction
        The metric loss :math:`L_\\mathrm{DML}` (a submodule: its parameters, such as proxies,
        belong to this module).
    embedder : FlowEmbedder or DuelingFlowEmbedder
        The metric layer that produced the embeddings. Held by reference, not as a submodule, so
        its parameters are not in this module's ``parameters()`` or ``state_dict()``.
    penalty_weight : float
        :math:`\\lambda_1`. Default 1.
    reward_weight : float
        :math:`\\lambda_2`; non-zero needs a :class:`~pml_regularizers.DuelingFlowEmbedder`.
        Default 0.
    penalty : {"square", "hinge", "signed"}
        The form :math:`\\rho_1`. Default ``"square"``, as for
        :class:`~pml_regularizers.JacobianDeterminantRegularizer`.
    target : float
        :math:`\\tau_1`. Default 0.
    reward : {"signed", "hinge"}
        The form :math:`\\rho_2`. Default ``"signed"``.
    reward_target : float
        :math:`\\tau_2`: with ``"hinge"``, branch 2 is rewarded until its log-determinant
        reaches it, so it must then be > 0 (with a non-zero ``reward_weight``): branch 2 starts
        as the identity, log-determinant 0, and only the reward trains it, so a hinge at or below
        0 would never act. Default 0.
    interpolation_eps : float, optional
        :math:`\\varepsilon > 0`; ``None`` (default) uses the batch points only.
    **kwargs
        As for every PML loss (``embedding_regularizer``, ``reducer``, ``collect_stats``, ...).

    Notes
    -----
    - Default distance: :class:`~pytorch_metric_learning.distances.LpDistance` (unused; the
      wrapped loss has its own).
    - Default reducer: :class:`~pytorch_metric_learning.reducers.MeanReducer` per sub-loss.
    - Reducer input: ``loss`` (the wrapped loss's value), ``logdet_penalty`` and
      ``logdet_reward``, all ``already_reduced``.
    - Give it the tensor the embedder returned: it reads the forward that returned it (other
      forwards in between, such as a ``ref_emb`` batch, do not matter). Works as
      ``loss_funcs={"metric_loss": ...}`` of PML's trainers, in a plain loop and under
      PML's ``DistributedLossWrapper`` (which gathers embeddings and labels: log-determinants are
      gathered to match, and each rank interpolates within its own batch).
    - Stats (with ``collect_stats=True``): ``logdet_mean`` (branch 1 on the batch),
      ``interpolated_logdet_mean`` (branch 1 on the interpolated points), ``branch2_logdet_mean``
      and ``num_interpolated``.
    """

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        embedder: FlowEmbedder | DuelingFlowEmbedder,
        penalty_weight: float = 1.0,
        reward_weight: float = 0.0,
        penalty: F.LogdetPenalty = "square",
        target: float = 0.0,
        reward: Literal["signed", "hinge"] = "signed",
        reward_target: float = 0.0,
        interpolation_eps: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(loss, BaseMetricLossFunction):
            raise ValueError(f"loss must be a PML BaseMetricLossFunction, got {type(loss).__name__}")
        if not isinstance(embedder, (FlowEmbedder, DuelingFlowEmbedder)):
            raise ValueError(f"embedder must be a FlowEmbedder or DuelingFlowEmbedder, got {type(embedder).__name__}")
        penalty_weight = finite_float("penalty_weight", penalty_weight)
        reward_weight = finite_float("reward_weight", reward_weight)
        for name, value in (("penalty_weight", penalty_weight), ("reward_weight", reward_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (a negative weight flips the objective), got {value}")
        target = finite_float("target", target)
        reward_target = finite_float("reward_target", reward_target)
        if reward_weight != 0 and not isinstance(embedder, DuelingFlowEmbedder):
            raise ValueError("reward_weight != 0 needs a DuelingFlowEmbedder (branch 2 is rewarded)")
        if penalty not in F.LOGDET_PENALTIES:
            raise ValueError(f"penalty must be one of {F.LOGDET_PENALTIES}, got {penalty!r}")
        if reward not in _REWARDS:
            raise ValueError(f"reward must be one of {_REWARDS}, got {reward!r}")
        if reward == "hinge" and reward_weight != 0 and reward_target <= 0:
            raise ValueError(
                f"reward='hinge' needs reward_target > 0, got {reward_target}: branch 2 starts as "
                "the identity (log-det 0) and only the reward trains it, so the hinge would never act"
            )
        if interpolation_eps is not None and not (finite_float("interpolation_eps", interpolation_eps) > 0):
            raise ValueError(f"interpolation_eps must be a finite number > 0 or None, got {interpolation_eps}")
        self.loss = loss
        self._embedder = ModuleReference(embedder)
        self.penalty_weight = penalty_weight
        self.reward_weight = reward_weight
        self.penalty = penalty
        self.target = target
        self.reward = reward
        self.reward_target = reward_target
        self.interpolation_eps = None if interpolation_eps is None else float(interpolation_eps)
        self.add_to_recordable_attributes(list_of_names=["penalty_weight", "reward_weight"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=[
                "logdet_mean",
                "interpolated_logdet_mean",
                "branch2_logdet_mean",
                "num_interpolated",
            ],
            is_stat=True,
        )

    @property
    def embedder(self) -> FlowEmbedder | DuelingFlowEmbedder:
        """The flow metric layer whose forwards this loss reads."""
        return cast("FlowEmbedder | DuelingFlowEmbedder", self._embedder.module)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: tuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> dict:
        check_rows(embeddings, "embeddings", self.embedder.out_features, "out_features")
        if self.interpolation_eps is not None and labels is None:
            raise ValueError("labels are required when interpolation_eps is set")
        if len(embeddings) == 0:
            return self.zero_losses()
        try:
            record, is_gathered = self._branch1().find_forward(embeddings)
        except ValueError:  # a NaN or infinity is named before the flow's "not my output"
            check_finite(type(self).__name__, {"embeddings": embeddings})
            raise
        own_ref = ref_emb is embeddings and ref_labels is labels
        metric = self.loss(
            embeddings,
            labels,
            indices_tuple,
            None if own_ref else ref_emb,
            None if own_ref else ref_labels,
        )
        points, valid = self._interpolated_points(record, labels, is_gathered)
        out = {"loss": already_reduced(metric)}
        out["logdet_penalty"] = self.zero_loss()
        out["logdet_reward"] = self.zero_loss()
        if self.penalty_weight != 0:
            batch = gathered(record.logdet) if is_gathered else record.logdet
            extra = self._at_points(self._branch1(), batch, points, valid, is_gathered)
            values = F.logdet_penalty(torch.cat([batch, extra]), self.penalty, self.target)
            out["logdet_penalty"] = already_reduced(self.penalty_weight * values.mean())
            self._set_stats("logdet_mean", batch)
            if points is not None:
                self._set_stats("interpolated_logdet_mean", extra)
        if self.reward_weight != 0:
            dueling = cast(DuelingFlowEmbedder, self.embedder)  # __init__ checks it for reward_weight != 0
            batch = dueling.branch2_logdet_of(embeddings)  # raises if branch 2 did not run
            extra = self._at_points(dueling.branch2, batch, points, valid, is_gathered)
            values = torch.cat([batch, extra])
            if self.reward == "hinge":
                values = torch.relu(self.reward_target - values)
            else:
                values = self.reward_target - values
            out["logdet_reward"] = already_reduced(self.reward_weight * values.mean())
            self._set_stats("branch2_logdet_mean", batch)
        if self.collect_stats and valid is not None:
            self.num_interpolated = int(valid.sum())
        terms = [term["losses"] for term in out.values() if isinstance(term["losses"], Tensor)]
        settings = {
            "penalty_weight": self.penalty_weight,
            "target": self.target,
            "reward_weight": self.reward_weight,
            "reward_target": self.reward_target,
        }
        check_finite(type(self).__name__, {"embeddings": embeddings}, terms, settings)
        return out

    def _sub_loss_names(self) -> list[str]:
        return ["loss", "logdet_penalty", "logdet_reward"]

    def _branch1(self) -> FlowEmbedder:
        e = self.embedder
        return e.branch1 if isinstance(e, DuelingFlowEmbedder) else e

    def _interpolated_points(
        self, record: FlowForward, labels: Tensor | None, is_gathered: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        """This rank's interpolated points and which of them count (every rank's, when the batch
        is gathered)."""
        if self.interpolation_eps is None:
            return None, None
        assert labels is not None  # compute_loss refuses labels=None when interpolation_eps is set
        h = record.features
        # PML's DistributedLossWrapper puts this rank's labels first
        points, valid = F.same_class_interpolation(h, labels[: h.shape[0]], self.interpolation_eps)
        if is_gathered:
            valid = gathered(valid.to(torch.uint8)).bool()
        return points, valid

    @staticmethod
    def _at_points(
        flow: FlowEmbedder,
        batch: Tensor,
        points: Tensor | None,
        valid: Tensor | None,
        is_gathered: bool,
    ) -> Tensor:
        """A branch's log-determinants on the counted interpolated points (an empty slice of its
        ``batch`` log-determinants without points)."""
        if points is None:
            return batch[:0]
        _, at_points = flow.forward_and_logdet(points)
        if is_gathered:
            at_points = gathered(at_points)
        return at_points[valid]

    def _set_stats(self, name: str, values: Tensor) -> None:
        if self.collect_stats:
            setattr(self, name, float(values.detach().mean()) if values.numel() else math.nan)
