"""The Markdown of benchmark reports: the summary table, the per-epoch validation table, and the
lines that say which commands and devices made a report."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from .metric_names import METRIC_LABELS
from .report_data import ValidationCurve
from .stats import SummaryRow, format_interval, format_number, group_rows, select_metrics

__all__ = ["markdown_table", "split_heading", "validation_curve_table", "provenance_lines", "device_lines"]


def _cell(row: SummaryRow) -> str:
    text = format_interval(row.mean, row.half_width)
    if row.diff_mean is not None:
        assert row.diff_half_width is not None  # set together with diff_mean
        pairs = "" if row.n_pairs == row.n else f", {row.n_pairs} pairs"
        text += f" (Δ {format_interval(row.diff_mean, row.diff_half_width, signed=True)}{pairs})"
    elif row.baseline is not None:
        text += " (Δ n/a: no shared seed)"
    return text


def markdown_table(rows: Sequence[SummaryRow], metrics: Sequence[str] | None = None) -> str:
    """Render summary rows as a markdown table.

    One line per (experiment, embedding) (and split, with a split column when rows mix
    splits). A metric cell reads ``0.4123 ± 0.0110``: the mean over seeds and its 95%
    t-interval half-width. For an experiment compared with a baseline the cell goes on with
    ``(Δ +0.0040 ± 0.0030)``, the paired difference to the baseline and its half-width (with
    the number of pairs when fewer than the seeds), or ``(Δ n/a: no shared seed)``; the header
    names the baseline. ``n/a`` stands for an undefined half-width (one seed or one pair) and
    ``–`` for a metric an experiment lacks.

    Parameters
    ----------
    rows : sequence of SummaryRow
        Output of :func:`~pml_regularizers.bench.results.stats.summarize`.
    metrics : sequence of str, optional
        Metric columns in order; by default every metric in ``rows``.

    Returns
    -------
    str
        The table, one line per table row, ending with a newline.
    """
    columns = select_metrics(rows, metrics)
    baselines = sorted({row.baseline for row in rows if row.baseline is not None})
    with_split = len({row.split for row in rows}) > 1
    suffix = f" (Δ vs {', '.join(baselines)})" if baselines else ""
    header = ["Experiment", *(["Split"] if with_split else []), "Embedding", "Seeds"]
    header += [METRIC_LABELS.get(m, m) + suffix for m in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (experiment, split, embedding), by_metric in group_rows(rows).items():
        seeds = max(row.n for row in by_metric.values())
        cells = [experiment, *([split] if with_split else []), embedding, str(seeds)]
        cells += [_cell(by_metric[m]) if m in by_metric else "–" for m in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def split_heading(split: str) -> str:
    """The line above a report's summary table: which split it summarizes and how."""
    what = "Test split" if split == "test" else f"Split {split!r}"
    return f"{what}. Mean over seeds ± half-width of the 95% Student-t interval."


def validation_curve_table(curves: Sequence[ValidationCurve]) -> str | None:
    """A markdown table of validation accuracy after each epoch, one row per experiment.

    The columns are every epoch of some curve; a cell is the curve's mean at that epoch, blank
    where the experiment has none (no run reached it, or every value was nan); the last column
    counts the runs.

    Parameters
    ----------
    curves : sequence of ValidationCurve
        Output of :func:`~pml_regularizers.bench.results.training_logs.validation_curves`.

    Returns
    -------
    str or None
        The table, or ``None`` when there is no curve.
    """
    if not curves:
        return None
    epochs = sorted(set().union(*(c.epochs for c in curves)))
    lines = [
        "| Experiment | " + " | ".join(f"{e:g}" for e in epochs) + " | runs |",
        "|---|" + "---|" * (len(epochs) + 1),
    ]
    for curve in curves:
        by_epoch = dict(zip(curve.epochs, curve.values))
        cells = [format_number(by_epoch[e]) if e in by_epoch and not math.isnan(by_epoch[e]) else "" for e in epochs]
        lines.append(f"| {curve.experiment} | " + " | ".join(cells) + f" | {curve.runs} |")
    return "\n".join(lines)


def provenance_lines(command: str | None, experiment_commands: Sequence[str]) -> list[str]:
    """Markdown lines naming the command that made a report and the commands that ran its
    experiments; empty where there is neither.

    Parameters
    ----------
    command : str or None
        The command that made the report.
    experiment_commands : sequence of str
        The commands that ran its experiments, in order.
    """
    lines = []
    if command:
        lines += ["Made by:", "", "```bash", command, "```", ""]
    if experiment_commands:
        lines += ["Its experiments were run by:", "", "```bash", *experiment_commands, "```", ""]
    return lines


def device_lines(devices: Sequence[str | None]) -> list[str]:
    """A markdown line saying which devices ran a report's experiments (``None``: not recorded, as
    in results written before the runner recorded it); empty when none is recorded."""
    if all(d is None for d in devices):
        return []
    counts = Counter(d or "not recorded" for d in devices)
    parts = [f"{d} ({n} experiment{'s' if n > 1 else ''})" for d, n in counts.items()]
    return [f"Run on: {', '.join(parts)}.", ""]
