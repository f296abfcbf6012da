"""Statistics of benchmark records: means over seeds, Student-t intervals, differences to a
baseline paired by seed, and what such a difference says.

A record is one seed's metrics for one experiment, split and embedding:
``{"experiment", "seed", "split", "embedding", "metrics": {name: value}}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .metric_names import METRIC_LABELS

__all__ = [
    "SummaryRow",
    "t_interval",
    "summarize",
    "verdict",
    "metric_order",
    "select_metrics",
    "group_rows",
    "format_number",
    "format_interval",
]


@dataclass
class SummaryRow:
    """Mean and 95% interval of one metric for one (experiment, split, embedding) over seeds.

    Attributes
    ----------
    experiment, split, embedding, metric : str
        What the row summarizes.
    mean, half_width : float
        Mean over seeds and the half-width of its Student-t interval (nan for a single seed).
    n : int
        Number of seeds.
    diff_mean, diff_half_width : float or None
        Mean and interval half-width of the per-seed difference ``experiment - baseline`` over the
        seeds both have; ``None`` for the baseline itself, without a baseline, or with no shared
        seed.
    n_pairs : int
        Number of shared seeds behind the difference (0 when there is none).
    baseline : str or None
        The experiment the difference is taken against.
    """

    experiment: str
    split: str
    embedding: str
    metric: str
    mean: float
    half_width: float
    n: int
    diff_mean: float | None = None
    diff_half_width: float | None = None
    n_pairs: int = 0
    baseline: str | None = None


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and Student-t confidence-interval half-width of ``values``.

    Parameters
    ----------
    values : sequence of float
        At least one value.
    confidence : float
        Two-sided confidence level in (0, 1).

    Returns
    -------
    (float, float)
        The mean and ``t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard
        deviation; the half-width is nan when ``n == 1``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("values must hold at least one value, got an empty sequence")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan
    sem = x.std(ddof=1) / math.sqrt(x.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, df=x.size - 1) * sem)


def metric_order(names: Sequence[str]) -> list[str]:
    """The distinct ``names`` in the order of ``METRIC_LABELS``, unknown metrics after them in
    first-seen order."""
    known = [m for m in METRIC_LABELS if m in names]
    return known + [m for m in dict.fromkeys(names) if m not in METRIC_LABELS]


def _values_by_seed(records: Sequence[dict], split: str) -> dict[tuple, dict]:
    """Map (experiment, embedding, metric) to {seed: value}, in first-seen order."""
    table: dict[tuple, dict] = {}
    for record in records:
        if record["split"] != split:
            continue
        for metric, value in record["metrics"].items():
            if value is None:
                continue
            key = (record["experiment"], record["embedding"], metric)
            per_seed = table.setdefault(key, {})
            if record["seed"] in per_seed:
                raise ValueError(
                    f"records hold two values for experiment {key[0]!r}, embedding {key[1]!r}, "
                    f"metric {metric!r}, seed {record['seed']!r}, split {split!r}"
                )
            per_seed[record["seed"]] = float(value)
    return table


def summarize(records: Sequence[dict], baseline: str | None = None, split: str = "test") -> list[SummaryRow]:
    """Summarize records over seeds, with differences against a baseline paired by seed.

    Parameters
    ----------
    records : sequence of dict
        Records with an ``"experiment"`` key, as ``load_records`` returns them (several
        experiments may be mixed).
    baseline : str, optional
        Experiment name to compare against. Each experiment's value for a metric and embedding
        is paired with the baseline's value for the same metric, embedding and seed.
    split : str
        Only records of this split are used.

    Returns
    -------
    list of SummaryRow
        Ordered by experiment (first appearance), embedding (first appearance), then metric
        (:func:`metric_order`).
    """
    table = _values_by_seed(records, split)
    experiments = list(dict.fromkeys(key[0] for key in table))
    if baseline is not None and baseline not in experiments:
        raise ValueError(
            f"baseline must be one of the experiments with {split!r} records {experiments}, got {baseline!r}"
        )
    embeddings = list(dict.fromkeys(key[1] for key in table))
    metrics = metric_order([key[2] for key in table])
    rows = []
    for experiment in experiments:
        for embedding in embeddings:
            for metric in metrics:
                per_seed = table.get((experiment, embedding, metric))
                if per_seed is None:
                    continue
                mean, half = t_interval(list(per_seed.values()))
                row = SummaryRow(experiment, split, embedding, metric, mean, half, len(per_seed))
                if baseline is not None and experiment != baseline:
                    _add_difference(row, per_seed, table.get((baseline, embedding, metric), {}), baseline)
                rows.append(row)
    return rows


def _add_difference(row: SummaryRow, per_seed: dict, base: dict, baseline: str) -> None:
    shared = [seed for seed in per_seed if seed in base]
    row.baseline = baseline
    row.n_pairs = len(shared)
    if shared:
        row.diff_mean, row.diff_half_width = t_interval([per_seed[seed] - base[seed] for seed in shared])


def verdict(row: SummaryRow) -> str:
    """What a row's paired difference to its baseline says, for a metric where higher is better
    (every metric of ``METRIC_LABELS``).

    Parameters
    ----------
    row : SummaryRow
        A row compared with a baseline (``row.baseline`` set).

    Returns
    -------
    str
        ``"better"`` when the difference's interval lies above 0, ``"worse"`` when it lies below
        0, ``"no clear difference"`` when it holds 0 (an interval that ends at 0 holds it),
        ``"not enough seeds"`` when one shared seed leaves the interval undefined, and
        ``"no shared seed"`` when the two experiments share no seed.

    Raises
    ------
    ValueError
        If ``row`` is not compared with a baseline (it is the baseline, or there is none).
    """
    if row.baseline is None:
        raise ValueError(f"row must be compared with a baseline, got the row of {row.experiment!r} without one")
    if row.diff_mean is None or row.diff_half_width is None:
        return "no shared seed"
    if math.isnan(row.diff_half_width):
        return "not enough seeds"
    if row.diff_mean - row.diff_half_width > 0:
        return "better"
    if row.diff_mean + row.diff_half_width < 0:
        return "worse"
    return "no clear difference"


def select_metrics(rows: Sequence[SummaryRow], metrics: Sequence[str] | None) -> list[str]:
    """``metrics``, checked against those in ``rows``; by default every metric in ``rows`` in
    :func:`metric_order`.

    Raises
    ------
    ValueError
        If ``metrics`` names a metric that no row holds.
    """
    present = metric_order([row.metric for row in rows])
    if metrics is None:
        return present
    unknown = [m for m in metrics if m not in present]
    if unknown:
        raise ValueError(f"metrics must be among those in rows {present}, got unknown {unknown}")
    return list(metrics)


def group_rows(rows: Sequence[SummaryRow]) -> dict[tuple[str, str, str], dict[str, SummaryRow]]:
    """The rows by (experiment, split, embedding), then by metric, in the order of ``rows``."""
    groups: dict[tuple[str, str, str], dict[str, SummaryRow]] = {}
    for row in rows:
        groups.setdefault((row.experiment, row.split, row.embedding), {})[row.metric] = row
    return groups


def format_number(value: float, signed: bool = False) -> str:
    """``value`` as reports print it: 4 decimals (with its sign when ``signed``), ``n/a`` for nan."""
    if math.isnan(value):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_interval(mean: float, half_width: float, signed: bool = False) -> str:
    """``mean ± half_width`` as reports print it, e.g. ``0.4123 ± 0.0110`` (see
    :func:`format_number`)."""
    return f"{format_number(mean, signed)} ± {format_number(half_width)}"
