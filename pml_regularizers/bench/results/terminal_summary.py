"""A report summarized for the terminal: one compact table of its main metrics, their paired
differences to the baseline and what those say, and where the full report is."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .metric_names import METRIC_LABELS, PRIMARY_METRIC
from .report_data import read_report_data
from .stats import SummaryRow, format_interval, group_rows, metric_order, verdict

__all__ = ["SUMMARY_METRICS", "method_name", "compact_table", "report_summary"]

PathLike = str | os.PathLike
# The metrics of the compact table; the verdict is the first one's.
SUMMARY_METRICS = (PRIMARY_METRIC, "precision_at_1")


def method_name(experiment: str, baseline: str) -> str:
    """The part of an experiment's name that differs from the baseline's.

    Names are compared by their ``-``-separated parts: the parts both names begin with and then
    the parts both end with are dropped, e.g. ``glyphs-proxy_anchor-skewed_mean-linear`` against
    ``glyphs-proxy_anchor-linear`` gives ``skewed_mean``.

    Parameters
    ----------
    experiment, baseline : str
        Experiment names.

    Returns
    -------
    str
        The differing parts joined by ``-``; the whole name when nothing is left (the baseline
        itself, or a name made of the baseline's parts).
    """
    mine, theirs = experiment.split("-"), baseline.split("-")
    start = 0
    while start < min(len(mine), len(theirs)) and mine[start] == theirs[start]:
        start += 1
    end = 0
    while end < min(len(mine), len(theirs)) - start and mine[-1 - end] == theirs[-1 - end]:
        end += 1
    rest = mine[start : len(mine) - end]
    return "-".join(rest) if rest else experiment


def _columns(rows: Sequence[SummaryRow], metrics: Sequence[str]) -> list[str]:
    present = metric_order([row.metric for row in rows])
    return [m for m in metrics if m in present] or present[: len(metrics)]


def _difference(row: SummaryRow | None, baseline: str | None) -> str:
    if row is None or baseline is None or row.experiment == baseline:
        return ""
    if row.diff_mean is None:
        return "n/a"
    assert row.diff_half_width is not None  # set together with diff_mean
    pairs = "" if row.n_pairs == row.n else f" ({row.n_pairs} pairs)"
    return format_interval(row.diff_mean, row.diff_half_width, signed=True) + pairs


def compact_table(rows: Sequence[SummaryRow], metrics: Sequence[str] = SUMMARY_METRICS) -> str:
    """Summary rows as a plain-text table for the terminal.

    One line per (experiment, embedding) (with an embedding column when there are several, and a
    split column when the rows mix splits). The method column is the experiment's
    :func:`method_name` against the baseline (``baseline`` for the baseline itself), or its
    whole name without a baseline. Each metric shows its mean over seeds ± the half-width of the
    95% Student-t interval (``n/a`` for one seed, ``–`` where the experiment lacks the metric) and,
    with a baseline, the paired difference ``Δ`` to it, likewise (``n/a`` without a shared seed;
    the number of pairs when fewer than the seeds). With a baseline, the last column is the
    :func:`~pml_regularizers.bench.results.stats.verdict` of the first metric's difference.

    Parameters
    ----------
    rows : sequence of SummaryRow
        Output of :func:`~pml_regularizers.bench.results.stats.summarize`, with at most one baseline.
    metrics : sequence of str
        The metrics to show, those present in ``rows``; when none is, the first as many metrics
        of ``rows`` (in ``METRIC_LABELS`` order). By default MAP@R and P@1.

    Returns
    -------
    str
        The table, columns aligned with spaces, without a trailing newline; empty for no rows.

    Raises
    ------
    ValueError
        If the rows are compared with more than one baseline.
    """
    if not rows:
        return ""
    baselines = {row.baseline for row in rows if row.baseline is not None}
    if len(baselines) > 1:
        raise ValueError(f"rows must be compared with one baseline at most, got {sorted(baselines)}")
    baseline = baselines.pop() if baselines else None
    columns = _columns(rows, metrics)
    groups = group_rows(rows)
    with_split = len({key[1] for key in groups}) > 1
    with_embedding = len({key[2] for key in groups}) > 1
    labels = [METRIC_LABELS.get(m, m) for m in columns]
    header = ["method", *(["split"] if with_split else []), *(["embedding"] if with_embedding else []), "seeds"]
    for label in labels:
        header += [label, f"Δ {label}"] if baseline else [label]
    if baseline:
        header.append(f"verdict ({labels[0]})")
    table = [header]
    for (experiment, split, embedding), by_metric in groups.items():
        if baseline is None:
            name = experiment
        else:
            name = "baseline" if experiment == baseline else method_name(experiment, baseline)
        line = [name, *([split] if with_split else []), *([embedding] if with_embedding else [])]
        line.append(str(max(row.n for row in by_metric.values())))
        for metric in columns:
            row = by_metric.get(metric)
            line.append("–" if row is None else format_interval(row.mean, row.half_width))
            if baseline:
                line.append(_difference(row, baseline))
        if baseline:
            first = by_metric.get(columns[0])
            line.append("" if first is None or experiment == baseline else verdict(first))
        table.append(line)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table)


def report_summary(report_dir: PathLike, metrics: Sequence[str] = SUMMARY_METRICS) -> str:
    """The terminal summary of the report in ``report_dir``, from its ``report.json``.

    Parameters
    ----------
    report_dir : path
        A folder that :func:`~pml_regularizers.bench.results.report.write_report` wrote.
    metrics : sequence of str
        The metrics of the table, as for :func:`compact_table`.

    Returns
    -------
    str
        The report's title; a line saying what the numbers are; :func:`compact_table` (or a line
        saying that the split has no records); and the path of ``report.md``.
    """
    data = read_report_data(report_dir)
    lines = [data.title]
    if data.rows:
        what = "test split" if data.split == "test" else f"split {data.split!r}"
        lines.append(
            f"{what}: mean over seeds ± half-width of the 95% Student-t interval"
            + (f"; Δ: difference to {data.baseline}, paired by seed" if data.baseline else "")
        )
        lines += ["", compact_table(data.rows, metrics), ""]
    else:
        lines += [f"No {data.split} records found.", ""]
    lines.append(f"full report: {Path(report_dir) / 'report.md'}")
    return "\n".join(lines)
