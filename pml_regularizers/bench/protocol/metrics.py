"""Retrieval metrics for the benchmark: PML's AccuracyCalculator plus Recall@k."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils.accuracy_calculator import (
    AccuracyCalculator,
    maybe_get_avg_of_avgs,
    nan_accuracy,
    try_getting_not_lone_labels,
)
from pytorch_metric_learning.utils.inference import FaissKMeans
from torch import Tensor

from ..results.metric_names import DEFAULT_METRICS, RECALL_KS

__all__ = ["BenchAccuracyCalculator", "recall_at_k"]


def recall_at_k(
    knn_labels: Tensor,
    query_labels: Tensor,
    k: int,
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    label_comparison_fn: Callable[[Tensor, Tensor], Tensor] = torch.eq,
) -> float | list[float]:
    """Fraction of queries with at least one same-label item among their ``k`` nearest neighbours.

    Parameters
    ----------
    knn_labels : Tensor
        Labels of each query's neighbours, nearest first, shape ``(num_queries, num_neighbours)``.
        When ``num_neighbours < k`` all neighbours count.
    query_labels : Tensor
        Labels of the queries, shape ``(num_queries,)``.
    k : int
        Number of neighbours to look at.
    avg_of_avgs, return_per_class : bool
        As in PML's ``AccuracyCalculator``: average per class first, or return the per-class values.
    label_comparison_fn : callable
        Compares ``query_labels[:, None]`` with neighbour labels, returning a boolean matrix.

    Returns
    -------
    float or list of float
        The recall, or one recall per class with ``return_per_class``.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    same_label = label_comparison_fn(query_labels[:, None], knn_labels[:, :k])
    hit = torch.any(same_label, dim=1).type(torch.float64)
    return maybe_get_avg_of_avgs(hit, query_labels, avg_of_avgs, return_per_class)


def _recall_metric(k: int) -> Callable[..., float | list[float]]:
    """The ``calculate_recall_at_<k>`` method of :class:`BenchAccuracyCalculator`."""

    def calculate(
        self: AccuracyCalculator,
        knn_labels: Tensor,
        query_labels: Tensor,
        not_lone_query_mask: Tensor,
        label_counts: tuple[Tensor, Tensor],
        **kwargs: object,
    ) -> float | list[float]:
        knn_labels, query_labels = try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        return recall_at_k(
            knn_labels, query_labels, k, self.avg_of_avgs, self.return_per_class, self.label_comparison_fn
        )

    calculate.__name__ = f"calculate_recall_at_{k}"
    calculate.__qualname__ = f"BenchAccuracyCalculator.{calculate.__name__}"
    calculate.__doc__ = f"Recall@{k} (see the class docstring)."
    return calculate


class BenchAccuracyCalculator(AccuracyCalculator):
    """PML's ``AccuracyCalculator`` plus ``recall_at_1``, ``_2``, ``_4`` and ``_8``.

    Recall@k is the deep-metric-learning retrieval recall: the fraction of queries that have at
    least one same-label reference among their ``k`` nearest neighbours. When the reference set
    contains the queries (``get_accuracy`` without a separate reference, or
    ``ref_includes_query=True``) PML's k-NN search asks for one extra neighbour and removes each
    query's own index, so a query never retrieves itself. As for PML's ``precision_at_1``, queries
    whose label has no other item in the reference set are left out, so ``recall_at_1`` equals
    ``precision_at_1``.

    The neighbour count is PML's choice for ``k`` (``"max_bin_count"``: the largest class size,
    which MAP@R and R-precision need), raised where necessary to the largest Recall@k requested,
    but never above the number of available references.

    Parameters
    ----------
    include : tuple of str
        Metrics to compute; by default :data:`DEFAULT_METRICS`.
    k : int, "max_bin_count" or None
        As in PML: neighbours to retrieve (``None``: all references).
    **kwargs
        Passed on to ``AccuracyCalculator`` (``exclude``, ``avg_of_avgs``, ``knn_func``, ...). The
        default ``kmeans_func`` is PML's, clustering as PML's does without faiss's warning about
        small sets (its ``min_points_per_centroid`` is 1, which changes no cluster).
    """

    def __init__(
        self,
        include: tuple[str, ...] = DEFAULT_METRICS,
        k: int | str | None = "max_bin_count",
        **kwargs,
    ) -> None:
        if "kmeans_func" not in kwargs:
            device = kwargs.get("device") or c_f.use_cuda_if_available()
            # PML's k-means for NMI and AMI, with faiss told that any number of points a centroid
            # will do: that setting only decides whether faiss prints its "please provide at least
            # N training points" warning, once per call, which every test of a small set would.
            kwargs["kmeans_func"] = FaissKMeans(niter=20, gpu=device.type == "cuda", min_points_per_centroid=1)
        super().__init__(include=tuple(include), k=k, **kwargs)

    def requires_knn(self) -> list[str]:
        """Metrics that need the k-NN search: PML's plus every Recall@k."""
        return [*super().requires_knn(), *(f"recall_at_{k}" for k in RECALL_KS)]

    def determine_k(self, bin_counts: Tensor, num_reference_embeddings: int, ref_includes_query: bool) -> int:
        """PML's neighbour count, raised to the largest requested Recall@k the references allow."""
        base = super().determine_k(bin_counts, num_reference_embeddings, ref_includes_query)
        wanted = [k for k in RECALL_KS if f"recall_at_{k}" in self.get_curr_metrics()]
        if not wanted:
            return base
        available = num_reference_embeddings - int(ref_includes_query)
        return max(base, min(max(wanted), available))

    calculate_recall_at_1 = _recall_metric(1)
    calculate_recall_at_2 = _recall_metric(2)
    calculate_recall_at_4 = _recall_metric(4)
    calculate_recall_at_8 = _recall_metric(8)
