"""The names of the retrieval metrics the runner computes, in the order reports list them, with
their labels; the primary metric, which selects epochs and leads every table, is named here once."""

from __future__ import annotations

__all__ = ["DEFAULT_METRICS", "METRIC_LABELS", "PRIMARY_METRIC", "RECALL_KS"]

PRIMARY_METRIC = "mean_average_precision_at_r"
RECALL_KS = (1, 2, 4, 8)

DEFAULT_METRICS = (
    PRIMARY_METRIC,
    "r_precision",
    "precision_at_1",
    *(f"recall_at_{k}" for k in RECALL_KS),
    "NMI",
)

METRIC_LABELS = {
    PRIMARY_METRIC: "MAP@R",
    "r_precision": "R-Precision",
    "precision_at_1": "P@1",
    **{f"recall_at_{k}": f"R@{k}" for k in RECALL_KS},
    "NMI": "NMI",
    "AMI": "AMI",
    "mean_average_precision": "MAP",
    "mean_reciprocal_rank": "MRR",
}
