"""Benchmark reports: for a set of experiment folders, ``report.md`` with its figures, and
``report.json`` with its numbers (:mod:`~pml_regularizers.bench.results.report_data`).

The experiment folders are read through
:class:`~pml_regularizers.bench.results.folder.ExperimentFolder`, which describes what they hold.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .folder import ExperimentFolder
from .markdown import device_lines, markdown_table, provenance_lines, split_heading, validation_curve_table
from .plots import plot_embedding_map, plot_metric_comparison, plot_training_curves
from .report_data import REPORT_JSON, ExperimentInfo, ReportData, write_report_data
from .stats import summarize
from .training_logs import validation_curves

LOGGER = logging.getLogger(__name__)

__all__ = ["write_report"]

PathLike = str | os.PathLike


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_report(
    exp_dirs: Sequence[PathLike],
    out_dir: PathLike,
    baseline: str | None = None,
    split: str = "test",
    title: str = "Benchmark report",
    command: str | None = None,
) -> str:
    """Write ``report.md`` and its figures for a set of experiments, and ``report.json`` with its
    numbers.

    ``report.md`` holds the summary table (:func:`~pml_regularizers.bench.results.markdown.markdown_table`),
    a table of validation MAP@R after each epoch when the runs logged one
    (:func:`~pml_regularizers.bench.results.markdown.validation_curve_table`) and links to the figures
    written beside it: ``metrics.png`` (the split's metrics per experiment),
    ``training_curves.png`` (``total_loss`` over iterations) and, for each experiment with saved
    test embeddings (the lowest such seed), ``embeddings_<experiment>.png``. ``report.json``
    (:class:`~pml_regularizers.bench.results.report_data.ReportData`) holds the title, the commands, the
    devices, every summary row at full precision and the validation curves: programs that quote
    the report read it.

    Parameters
    ----------
    exp_dirs : sequence of path
        Experiment folders, each with a ``results.json``; experiment names must differ.
    out_dir : path
        Folder to write into (created if missing).
    baseline : str, optional
        Experiment name the others are compared with, paired by seed.
    split : str
        ``"test"`` (held-out classes) or ``"val"`` (the best validation MAP@R averaged over the
        cross-validation folds, the number a hyperparameter search compares).
    title : str
        The report's heading.
    command : str, optional
        The command that made this report; written under the heading, followed by the command
        of each experiment that its ``results.json`` records.

    Returns
    -------
    str
        The markdown text written to ``report.md``.
    """
    if not exp_dirs:
        raise ValueError("exp_dirs must name at least one experiment folder, got none")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, names, experiments = [], [], []
    for exp_dir in exp_dirs:
        results = ExperimentFolder(exp_dir).results()
        name = results.experiment
        if name in names:
            raise ValueError(f"exp_dirs must hold distinct experiments, {name!r} appears twice")
        names.append(name)
        records += results.named_records()
        experiments.append(ExperimentInfo(name, results.command or None, results.device))
    rows = summarize(records, baseline=baseline, split=split)
    lines = [
        f"# {title}",
        "",
        *provenance_lines(command, [e.command for e in experiments if e.command]),
        *device_lines([e.device for e in experiments]),
    ]
    if rows:
        lines += [split_heading(split), ""]
        if baseline is not None:
            lines += [f"Δ: difference to `{baseline}` paired by seed, with its 95% interval.", ""]
        lines += [markdown_table(rows)]
        plot_metric_comparison(rows, out / "metrics.png")
        lines += ["![metrics](metrics.png)", ""]
    else:
        lines += [f"No {split} records found.", ""]
    plot_training_curves(exp_dirs, out / "training_curves.png")
    lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    curves = validation_curves(exp_dirs)
    val_table = validation_curve_table(curves)
    if val_table is not None:
        lines += [
            "## Validation MAP@R after each epoch",
            "",
            "Mean over each experiment's training runs (seeds and folds); the columns are epochs.",
            "",
            val_table,
            "",
        ]
    for exp_dir, name in zip(exp_dirs, names):
        folder = ExperimentFolder(exp_dir)
        try:
            found = folder.first_test_embeddings()
        except (OSError, ValueError) as err:  # a damaged file costs its plot, not the report
            LOGGER.warning("no test embedding map for %s: %s", name, err)
            continue
        if found is None:
            continue
        seed, data = found
        file_name = f"embeddings_{_safe_name(name)}.png"
        plot_embedding_map(data["embeddings"], data["labels"], out / file_name)
        lines += [f"## Test embeddings: {name} ({folder.seed_dir(seed).name})", "", f"![{name}]({file_name})", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    write_report_data(ReportData(title, command, split, baseline, experiments, rows, curves), out / REPORT_JSON)
    return text
