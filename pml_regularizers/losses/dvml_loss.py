"""DVML's four-term objective, as a module for plain training loops (DVMLTrainer uses it too)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import cast

from pytorch_metric_learning import losses
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch import Tensor, nn

from .. import functional as F
from .._arguments import check_num_samples, finite_floats, is_int
from .._autocast import autocast_off
from .._checks import check_finite
from .._pml_glue import ModuleReference
from ..embedders.dvml_embedder import DVMLEmbedder, DVMLOutput
from ..miners.dvml_miner import DVMLMiner

TERM_NAMES = ("kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss")
PAPER_PHASE1_WEIGHTS = (1.0, 1.0, 0.1, 1.0)
PAPER_PHASE2_WEIGHTS = (0.8, 1.0, 0.2, 0.8)
# PML 2.9's losses whose compute_loss refuses ref_emb or indices_tuple (c_f.ref_not_supported,
# c_f.indices_tuple_not_supported), with their subclasses (ArcFace, CosFace, SphereFace,
# SubCenterArcFace); tests/test_dvml_loss.py checks this against every PML loss.
NO_REFERENCE_LOSSES: tuple[type, ...] = (
    losses.FastAPLoss,
    losses.HistogramLoss,
    losses.InstanceLoss,
    losses.LargeMarginSoftmaxLoss,
    losses.ManifoldLoss,
    losses.NPairsLoss,
    losses.NormalizedSoftmaxLoss,
    losses.P2SGradLoss,
    losses.PNPLoss,
    losses.ProxyAnchorLoss,
    losses.ProxyNCALoss,
    losses.RankedListLoss,
    losses.SmoothAPLoss,
    losses.SoftTripleLoss,
    losses.VICRegLoss,
)


class DVMLLoss(nn.Module):
    """Deep Variational Metric Learning's objective on trunk features, in two phases.

    With :math:`z_I, \\mu, \\log\\sigma^2` from a :class:`~pml_regularizers.DVMLEmbedder`, its
    synthetic samples :math:`\\hat z_{i,t}` (:math:`T` per row) and their decodings
    :math:`\\hat x_{i,t}`:

    .. math::

        L = \\lambda_1 \\underbrace{\\frac{1}{B}\\sum_i \\mathrm{KL}\\big(\\mathcal N(\\mu_i,
            \\sigma_i^2)\\,\\|\\,\\mathcal N(0, I)\\big)}_{\\texttt{kl\\_loss}}
          + \\lambda_2 \\underbrace{\\frac{1}{TB}\\sum_{i,t}\\lVert x_i - \\hat x_{i,t}
            \\rVert^2}_{\\texttt{reconstruction\\_loss}}
          + \\lambda_3 \\underbrace{L_m(\\hat z)}_{\\texttt{synthetic\\_metric\\_loss}}
          + \\lambda_4 \\underbrace{L_m(z_I)}_{\\texttt{metric\\_loss}}

    where :math:`L_m` is any PML metric loss. Phase 1 (epochs before ``phase2_start_epoch``)
    feeds the decoder detached samples, so the reconstruction trains the decoder only, with
    :math:`\\lambda = (1, 1, 0.1, 1)`; phase 2 lets its gradient reach the heads and the trunk,
    with :math:`\\lambda = (0.8, 1, 0.2, 0.8)`. With ``dimension_mean=True`` (the default) the
    KL term is further divided by :math:`D` and the reconstruction term by the feature width.

    Source: Lin et al., "Deep Variational Metric Learning", ECCV 2018. Published: the four terms,
    :math:`T = 20`, both phases and their weights (the paper prints :math:`-\\mathrm{KL}`, a sign
    slip: the KL divergence is minimised). Reconstructed: the switch epoch (not published); the
    reconstruction target :math:`x` is detached in both phases (the decoder's gradient reaches
    the trunk through :math:`\\hat z` only); KL summed over dimensions and averaged over the
    batch, and both terms then divided by their widths by default (a departure from the printed
    sums, see ``dimension_mean``); how :math:`L_m(\\hat z)` forms tuples (see below).

    Parameters
    ----------
    embedder : DVMLEmbedder
        The embedder (or a ``DistributedDataParallel`` around one), held by reference as
        :class:`~pml_regularizers.JacobianDeterminantLoss` holds its flow: it is a model, trained
        by the user's optimizer for it, and ``DVMLLoss.parameters()`` and ``state_dict()`` hold
        only the metric loss's (proxies, class weights), as for any PML loss.
    loss : torch.nn.Module
        A PML metric loss :math:`L_m` (or ``DistributedLossWrapper`` around one); a submodule.
    miner : BaseMiner, optional
        Miner for :math:`L_m(z_I)` on the real batch. When ``synthetic_miner`` is not given, a
        copy of it is wrapped in a :class:`~pml_regularizers.DVMLMiner` for
        :math:`L_m(\\hat z)`. A ``DVMLMiner`` here serves :math:`L_m(\\hat z)`, and a copy of its
        inner miner :math:`L_m(z_I)`. A ``DistributedMinerWrapper`` around either is kept
        around both.
    synthetic_miner : DVMLMiner, optional
        Explicit miner for :math:`L_m(\\hat z)` (or ``DistributedMinerWrapper`` around one).
    num_samples : int
        :math:`T \\ge 1` synthetic samples per input. Default 20, the paper's.
    phase2_start_epoch : int
        First epoch of phase 2 (epochs are counted from 1, as PML's trainers do). Default 5: the
        paper does not publish its switch point; it was chosen on validation folds (the DVML
        reports that ``docs/results.md`` links).
    phase1_weights, phase2_weights : sequence of 4 floats
        :math:`(\\lambda_1, \\lambda_2, \\lambda_3, \\lambda_4)` of each phase, non-negative.
    dimension_mean : bool
        Divide the KL term by the embedding size :math:`D` and the reconstruction term by the
        feature width :math:`F` (means over dimensions instead of the paper's sums). Default
        ``True``: with the sums, on the benchmark runner's glyph set (conv-4 trunk, 256-d features,
        64-d embeddings) the two terms start orders of magnitude larger than the metric loss, their
        gradients reach the trunk, and retrieval on unseen classes collapsed (``docs/results``,
        the DVML reports). ``False`` gives the paper's printed formula.
    synthetic_reference : bool, optional
        How :math:`L_m(\\hat z)` calls ``loss`` (see Notes): ``True``, with the real batch and the
        synthetic samples as reference embeddings; ``False``, on the synthetic samples alone.
        Default ``None``: ``False`` for the PML losses that refuse reference embeddings or
        tuples (:data:`NO_REFERENCE_LOSSES`, also inside a ``DistributedLossWrapper``), ``True``
        for every other loss; a loss of your own that refuses them needs ``False``.

    Notes
    -----
    :math:`L_m(\\hat z)`: for losses that accept ``ref_emb`` (pair and triplet losses) it is
    ``loss(z_I, labels, tuples, samples, sample_labels)`` with the tuples of the
    ``DVMLMiner``: real anchors, positives and negatives from one draw. Losses that refuse
    ``ref_emb`` or ``indices_tuple`` (proxy and classification losses, ``NPairsLoss``,
    ``FastAPLoss``, ``InstanceLoss``, ...) get the synthetic samples alone,
    ``loss(samples, sample_labels)``; ``synthetic_reference`` says which case applies.
    """

    def __init__(
        self,
        embedder: nn.Module,
        loss: nn.Module,
        miner: nn.Module | None = None,
        synthetic_miner: nn.Module | None = None,
        num_samples: int = 20,
        phase2_start_epoch: int = 5,
        phase1_weights: Sequence[float] = PAPER_PHASE1_WEIGHTS,
        phase2_weights: Sequence[float] = PAPER_PHASE2_WEIGHTS,
        dimension_mean: bool = True,
        synthetic_reference: bool | None = None,
    ) -> None:
        super().__init__()
        inner = getattr(embedder, "module", embedder)
        if not isinstance(inner, DVMLEmbedder):
            raise ValueError(
                f"embedder must be a DVMLEmbedder (or DistributedDataParallel around one), got {type(inner).__name__}"
            )
        if not isinstance(loss, nn.Module):
            raise ValueError(f"loss must be a PML metric loss module, got {type(loss).__name__}")
        check_num_samples(num_samples)
        if not is_int(phase2_start_epoch, 1):
            raise ValueError(f"phase2_start_epoch must be an int >= 1, got {phase2_start_epoch!r}")
        if synthetic_reference is not None and not isinstance(synthetic_reference, bool):
            raise ValueError(f"synthetic_reference must be True, False or None, got {synthetic_reference!r}")
        self._embedder = ModuleReference(embedder)
        self.loss = loss
        self.miner, self.synthetic_miner = split_miners(miner, synthetic_miner)
        if not isinstance(dimension_mean, bool):
            raise ValueError(f"dimension_mean must be True or False, got {dimension_mean!r}")
        self.num_samples = num_samples
        self.phase2_start_epoch = phase2_start_epoch
        self.dimension_mean = dimension_mean
        self.phase_weights = {
            1: _check_weights("phase1_weights", phase1_weights),
            2: _check_weights("phase2_weights", phase2_weights),
        }
        self._last_terms: dict[str, Tensor] = {}
        self.synthetic_reference = takes_reference(loss) if synthetic_reference is None else synthetic_reference

    @property
    def embedder(self) -> nn.Module:
        """The embedder whose outputs the terms are computed from."""
        return self._embedder.module

    def phase(self, epoch: int) -> int:
        """1 before ``phase2_start_epoch``, else 2."""
        if not is_int(epoch, 1):
            raise ValueError(f"epoch must be an int >= 1 (counted from 1), got {epoch!r}")
        return 1 if epoch < self.phase2_start_epoch else 2

    def weights(self, epoch: int) -> dict[str, float]:
        """The four terms' weights in ``epoch``'s phase, keyed by term name."""
        return self.phase_weights[self.phase(epoch)].copy()

    def terms(self, features: Tensor, labels: Tensor, epoch: int, noise: Tensor | None = None) -> dict[str, Tensor]:
        """The four unweighted terms, keyed ``kl_loss``, ``reconstruction_loss``,
        ``synthetic_metric_loss`` and ``metric_loss``.

        Parameters
        ----------
        features : Tensor
            Trunk features :math:`x`, shape ``(B, in_features)``.
        labels : Tensor
            Shape ``(B,)``.
        epoch : int
            The current epoch (from 1); it picks the phase.
        noise : Tensor, optional
            The standard normal draws, shape ``(B, T, D)``; ``torch.randn`` when omitted.

        Returns
        -------
        dict of str to Tensor
            Each term as a 0-dim tensor, before the phase weights of :meth:`weights` are applied.
        """
        terms = self._terms(features, labels, epoch, noise)
        check_finite(type(self).__name__, {"features": features}, list(terms.values()))
        return terms

    def _terms(self, features: Tensor, labels: Tensor, epoch: int, noise: Tensor | None) -> dict[str, Tensor]:
        """:meth:`terms` without the check of the result, which the caller makes."""
        phase = self.phase(epoch)
        if not isinstance(features, Tensor) or features.ndim != 2 or len(features) == 0:
            raise ValueError(
                "features must be a 2-D tensor with at least one row, got "
                f"{getattr(features, 'shape', type(features).__name__)}"
            )
        if not isinstance(labels, Tensor) or labels.ndim != 1 or len(labels) != len(features):
            raise ValueError(
                f"labels must be a 1-D tensor with one label per row of features "
                f"({len(features)}), got {getattr(labels, 'shape', type(labels).__name__)}"
            )
        labels = labels.to(features.device)
        check_finite(type(self).__name__, {"features": features})
        out = self.embedder(features, num_samples=self.num_samples, detach_decoder_input=phase == 1, noise=noise)
        real_tuples = None if self.miner is None else self.miner(out.invariant, labels)
        with autocast_off(features):  # in the embedder's dtype, not autocast's
            kl = F.gaussian_kl_to_standard_normal(out.mu, out.logvar).mean()
            target = features.detach().to(out.reconstruction.dtype)
            reconstruction = F.reconstruction_error(target, out.reconstruction)
        if self.dimension_mean:
            kl = kl / out.mu.shape[1]
            reconstruction = reconstruction / features.shape[1]
        terms = {
            "kl_loss": kl,
            "reconstruction_loss": reconstruction,
            "synthetic_metric_loss": self._synthetic_metric_loss(out, labels),
            "metric_loss": self.loss(out.invariant, labels, real_tuples),
        }
        return terms

    def forward(self, features: Tensor, labels: Tensor, epoch: int, noise: Tensor | None = None) -> Tensor:
        """The weighted sum of the four terms for ``epoch``'s phase; the unweighted terms of the
        call are kept, as floats, in ``last_terms``."""
        weights = self.weights(epoch)
        terms = self._terms(features, labels, epoch, noise)
        self._last_terms = {k: v.detach() for k, v in terms.items()}
        total = cast(Tensor, sum(weights[k] * terms[k] for k in TERM_NAMES))  # TERM_NAMES is not empty
        settings = {f"weight of {k}": w for k, w in weights.items()}
        check_finite(type(self).__name__, {"features": features}, [*terms.values(), total], settings)
        return total

    @property
    def last_terms(self) -> dict[str, float]:
        """The unweighted terms of the latest :meth:`forward`, as floats (read when asked for, so
        that a training step does not wait for the device to fill them)."""
        return {k: float(v) for k, v in self._last_terms.items()}

    def _synthetic_metric_loss(self, out: DVMLOutput, labels: Tensor) -> Tensor:
        sample_labels = labels.repeat_interleave(self.num_samples)
        if not self.synthetic_reference:
            return self.loss(out.samples, sample_labels)
        tuples = self.synthetic_miner(out.invariant, labels, out.samples, sample_labels)
        return self.loss(out.invariant, labels, tuples, out.samples, sample_labels)

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, phase2_start_epoch={self.phase2_start_epoch}, "
            f"phase1_weights={tuple(self.phase_weights[1].values())}, "
            f"phase2_weights={tuple(self.phase_weights[2].values())}, "
            f"synthetic_reference={self.synthetic_reference}"
        )


def takes_reference(loss: nn.Module) -> bool:
    """Whether ``loss`` (or the loss inside a ``DistributedLossWrapper``) accepts reference
    embeddings and tuples: ``False`` for :data:`NO_REFERENCE_LOSSES`, ``True`` otherwise."""
    inner = loss.loss if isinstance(loss, DistributedLossWrapper) else loss
    return not isinstance(inner, NO_REFERENCE_LOSSES)


def split_miners(miner: nn.Module | None, synthetic_miner: nn.Module | None) -> tuple[nn.Module | None, nn.Module]:
    """The miners for :math:`L_m(z_I)` and :math:`L_m(\\hat z)` from what the user gave (see
    :class:`DVMLLoss`'s ``miner`` and ``synthetic_miner``)."""
    if synthetic_miner is not None:
        if not isinstance(_unwrap_miner(synthetic_miner), DVMLMiner):
            raise ValueError(
                "synthetic_miner must be a DVMLMiner (or DistributedMinerWrapper around one), "
                f"got {type(synthetic_miner).__name__}"
            )
        if isinstance(_unwrap_miner(miner), DVMLMiner):
            raise ValueError("miner must be a plain PML miner when synthetic_miner is given")
        return miner, synthetic_miner
    if miner is None:
        return None, DVMLMiner()
    base = _unwrap_miner(miner)
    if not isinstance(base, BaseMiner):
        raise ValueError(
            f"miner must be a PML BaseMiner (or DistributedMinerWrapper around one), got {type(miner).__name__}"
        )
    if isinstance(base, DVMLMiner):
        synthetic = miner
        real = None if base.miner is None else _rewrap(miner, copy.deepcopy(base.miner))
    else:
        real = miner
        synthetic = _rewrap(miner, DVMLMiner(copy.deepcopy(base)))
    return real, synthetic


def _unwrap_miner(miner: nn.Module | None) -> nn.Module | None:
    return miner.miner if isinstance(miner, DistributedMinerWrapper) else miner


def _rewrap(like: nn.Module, miner: BaseMiner) -> nn.Module:
    """``miner`` inside a DistributedMinerWrapper with ``like``'s settings, if ``like`` is one."""
    if isinstance(like, DistributedMinerWrapper):
        return DistributedMinerWrapper(miner, efficient=like.efficient)
    return miner


def _check_weights(name: str, weights: Sequence[float]) -> dict[str, float]:
    meaning = "kl, reconstruction, synthetic metric, metric"
    values = finite_floats(name, weights, 4, meaning)
    if not all(w >= 0 for w in values):
        raise ValueError(f"{name} must be 4 non-negative numbers ({meaning}), got {weights!r}")
    return dict(zip(TERM_NAMES, values))
