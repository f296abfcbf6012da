"""Skewed-mean center regularizer."""

from __future__ import annotations

import math
from typing import Literal

from pytorch_metric_learning.distances import (
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
)
from pytorch_metric_learning.regularizers import BaseRegularizer
from pytorch_metric_learning.utils import common_functions as c_f
from torch import Tensor

from .. import functional as F
from .._arguments import finite_float, is_int, is_positive_int
from .._autocast import autocast_off
from .._checks import check_finite
from .._pml_glue import already_reduced

Form = Literal["pairwise", "rowwise"]


class SkewedMeanRegularizer(BaseRegularizer):
    """Pushes rows (class centers, proxies, classifier weights) apart through a skewed mean.

    With pair values :math:`a_{ij}` (the similarity for a similarity such as the default
    :class:`~pytorch_metric_learning.distances.CosineSimilarity`; minus the distance for a
    distance such as :class:`~pytorch_metric_learning.distances.LpDistance`, so that minimising
    always spreads the rows), the regularizer is

    .. math::

        R_\\lambda = \\mathrm{SM}_\\lambda(a_{ij} : i < j), \\qquad
        \\mathrm{SM}_\\lambda(a) = \\frac{1}{\\lambda}\\log\\Big(\\frac{1}{N}\\sum_k e^{\\lambda a_k}\\Big)

    (``form="pairwise"``; for an asymmetric distance such as
    :class:`~pytorch_metric_learning.distances.SNRDistance`, over ordered pairs :math:`i \\ne j`),
    or the mean over rows :math:`i` of :math:`\\mathrm{SM}_\\lambda(a_{ij} :
    j \\ne i)` (``form="rowwise"``). A positive :math:`\\lambda` weights the closest pairs most:
    :math:`\\lambda = 0` is the plain mean (which only moves the centroid), :math:`\\lambda \\to
    \\infty` the max-min (Tammes) objective, whose row-wise form is RegularFace. Several known
    energies are special cases on unit rows: Wang & Isola's uniformity
    :math:`\\log \\mathrm{mean}\\, e^{-t d^2} = -2t + 2t\\,\\mathrm{SM}_{2t}(s)`, and the MHE Riesz
    and logarithmic energies through :math:`\\mathrm{SM}_{-s}(\\log d)`.

    Source: "skewed mean function" for center regularization, ICLR 2023 submission
    (https://openreview.net/forum?id=7bcrAxy00Jw). Only its abstract is public: the log-mean-exp
    definition above, the choice of pair values and both forms are this project's reconstruction,
    chosen so that the abstract's claim (existing uniformity energies are special cases) holds.

    Parameters
    ----------
    lam : float
        The skew :math:`\\lambda`; finite. Default 4 (Wang-Isola's :math:`t = 2`).
    form : {"pairwise", "rowwise"}
        Skewed mean over all pairs (one value, ``already_reduced``), or one skewed mean per row
        over its partners (``element`` losses, reduced by the reducer; the default
        :class:`~pytorch_metric_learning.reducers.MeanReducer` averages them).
    num_classes : int, optional
        Checked against the number of rows when given: rows must be
        ``num_classes * centers_per_class``.
    centers_per_class : int
        Rows per class for multi-center losses (SoftTriple, SubCenterArcFace), stored class-major
        as those losses do: rows of the same class are never paired.
    block_size : int, optional
        Rows per block when streaming the pair matrix; by default about 2M pair entries a block
        (see :func:`pml_regularizers.functional.default_block_size`).
    **kwargs
        ``collect_stats``, ``reducer`` and ``distance``, as for every PML regularizer.

    Notes
    -----
    - Default distance: :class:`~pytorch_metric_learning.distances.CosineSimilarity`.
    - Default reducer: :class:`~pytorch_metric_learning.reducers.MeanReducer`.
    - Reducer input: ``loss``, ``already_reduced`` for ``form="pairwise"``, ``element`` (one value
      per row) for ``form="rowwise"``.
    - Computation happens in float32 at least (float16/bfloat16 rows are promoted), with autocast
      turned off inside; the result is cast back to the input dtype.
    - Pairwise form with ``CosineSimilarity``, ``DotProductSimilarity`` (``power=1``) or
      ``LpDistance(p=2, normalize_embeddings=True)``: a streaming kernel with O(block x rows)
      memory and about 1.5 ``R x R x D`` products for forward and backward together. Other
      distances and the row-wise form: gradient-checkpointed row blocks through the PML distance
      itself (same memory bound, about twice the time).
    - Stats (with ``collect_stats=True``): ``skewed_mean`` (the value, averaged over rows in the
      row-wise form), ``min_distance`` (smallest Euclidean distance between L2-normalised rows of
      different classes) and ``mean_similarity`` (mean cosine similarity over those pairs). The
      minimum costs one extra pass over the pair matrix, without gradient.
    """

    def __init__(
        self,
        lam: float = 4.0,
        form: Form = "pairwise",
        num_classes: int | None = None,
        centers_per_class: int = 1,
        block_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        lam = finite_float("lam", lam)
        if form not in ("pairwise", "rowwise"):
            raise ValueError(f"form must be 'pairwise' or 'rowwise', got {form!r}")
        if not is_positive_int(centers_per_class):
            raise ValueError(f"centers_per_class must be a positive int, got {centers_per_class!r}")
        if num_classes is not None and not is_int(num_classes, 2):
            raise ValueError(f"num_classes must be an int >= 2 or None, got {num_classes!r}")
        if block_size is not None and not is_positive_int(block_size):
            raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
        self.lam = lam
        self.form = form
        self.num_classes = num_classes
        self.centers_per_class = centers_per_class
        self.block_size = block_size
        self.add_to_recordable_attributes(list_of_names=["lam", "centers_per_class"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["skewed_mean", "min_distance", "mean_similarity"], is_stat=True
        )

    def compute_loss(self, x: Tensor) -> dict:
        self._check_input(x)
        with autocast_off(x):
            value, loss = self._skewed_mean(x)
        check_finite(type(self).__name__, {"x": x}, [value], {"lam": self.lam})
        self._set_stats(x, value)
        return {"loss": loss}

    def _skewed_mean(self, x: Tensor) -> tuple[Tensor, dict]:
        """The value (float32 at least) and PML's loss entry of the checked rows ``x``."""
        xc = F.at_least_float32(x)
        if self.distance.normalize_embeddings:  # huge or tiny rows: normalise without overflow
            xc = F.max_scaled_rows(xc)
        group = self.centers_per_class
        fast = self._gram_transform()
        if self.form == "pairwise" and fast is not None:
            transform, power = fast
            u = self.distance.maybe_normalize(xc)
            value = F.gram_pairwise_skewed_mean(u, self.lam, group, transform, power, self.block_size)
            return value, already_reduced(value.to(x.dtype))
        sign = 1.0 if self.distance.is_inverted else -1.0
        rows = F.row_skewed_means(xc, lambda q, r: sign * self.distance(q, r), self.lam, group, self.block_size)
        if self.form == "pairwise":
            value = F.skewed_mean(rows, self.lam)
            return value, already_reduced(value.to(x.dtype))
        loss = {
            "losses": rows.to(x.dtype),
            "indices": c_f.torch_arange_from_size(x),
            "reduction_type": "element",
        }
        return rows.mean(), loss

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()

    def _gram_transform(self) -> tuple[F.GramTransform, float] | None:
        """The streaming kernel's pair function for this distance, or None if it has none."""
        d = self.distance
        if type(d) in (CosineSimilarity, DotProductSimilarity) and d.power == 1:
            return "similarity", 1.0
        if type(d) is LpDistance and d.p == 2 and d.normalize_embeddings:
            return "neg_chord", float(d.power)
        return None

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D with shape (rows, embedding_size), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must have a floating-point dtype, got {x.dtype}")
        rows, k = x.shape[0], self.centers_per_class
        if rows % k != 0:
            raise ValueError(f"the number of rows of x ({rows}) must be divisible by centers_per_class ({k})")
        if self.num_classes is not None and rows != self.num_classes * k:
            raise ValueError(f"x must have num_classes * centers_per_class = {self.num_classes * k} rows, got {rows}")
        if rows // k < 2:
            raise ValueError(
                f"x must hold at least 2 classes (rows / centers_per_class >= 2), got {rows} "
                f"rows with centers_per_class={k}"
            )

    def _set_stats(self, x: Tensor, value: Tensor) -> None:
        if not self.collect_stats:
            return
        max_sim, mean_sim = F.pairwise_cosine_stats(x.detach(), self.centers_per_class, self.block_size)
        self.skewed_mean = float(value.detach())
        self.min_distance = math.sqrt(max(2.0 - 2.0 * max_sim, 0.0))
        self.mean_similarity = mean_sim
