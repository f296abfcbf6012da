"""The figures of benchmark reports, written as PNG files: metrics with their intervals, logged
columns over training, and a 2-D map of test embeddings."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .folder import ExperimentFolder
from .metric_names import METRIC_LABELS
from .stats import SummaryRow, group_rows, select_metrics
from .training_logs import mean_loss_curve

__all__ = ["plot_metric_comparison", "plot_training_curves", "plot_embedding_map"]

PathLike = str | os.PathLike


def _save(fig: Figure, path: PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)


def plot_metric_comparison(rows: Sequence[SummaryRow], path: PathLike, metrics: Sequence[str] | None = None) -> None:
    """Bar chart of each metric per (experiment, embedding), with 95% interval error bars.

    Parameters
    ----------
    rows : sequence of SummaryRow
        Output of :func:`~pml_regularizers.bench.results.stats.summarize`.
    path : path
        PNG file to write.
    metrics : sequence of str, optional
        One subplot per metric, in this order; by default every metric in ``rows``.
    """
    columns = select_metrics(rows, metrics)
    if not columns:
        raise ValueError("rows must hold at least one metric to plot, got none")
    groups = group_rows(rows)
    with_split = len({row.split for row in rows}) > 1
    labels = [f"{e}\n{s + ' ' if with_split else ''}{emb}" for e, s, emb in groups]
    ncols = min(len(columns), 4)
    nrows = math.ceil(len(columns) / ncols)
    panel_width = max(3.0, 1.5 + 0.6 * len(labels))
    fig = Figure(figsize=(panel_width * ncols, 3.8 * nrows))
    for i, metric in enumerate(columns):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        found = [g.get(metric) for g in groups.values()]
        means = [r.mean if r else math.nan for r in found]
        errors = [r.half_width if r and not math.isnan(r.half_width) else 0.0 for r in found]
        ax.bar(range(len(labels)), means, yerr=errors, capsize=4, color=[f"C{j % 10}" for j in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Mean over seeds, 95% t-interval")
    fig.tight_layout()
    _save(fig, path)


def plot_training_curves(
    exp_dirs: Sequence[PathLike],
    path: PathLike,
    column: str = "total_loss",
    log_file: str = "loss_histories.csv",
    xlabel: str = "iteration",
) -> None:
    """Plot one loss column against iteration, averaged over seeds, one line per experiment.

    Each experiment's line is :func:`~pml_regularizers.bench.results.training_logs.mean_loss_curve`, the
    mean over its training runs (one per seed, or one per seed and fold). Runs without the column
    are skipped, an experiment with no usable run gets no line, and a figure with no line at all
    says so in its title.

    Parameters
    ----------
    exp_dirs : sequence of path
        Experiment folders (see
        :meth:`~pml_regularizers.bench.results.folder.ExperimentFolder.loss_history_files` for where
        the CSVs are looked for).
    path : path
        PNG file to write.
    column : str
        Loss name as logged by record-keeper, e.g. ``"total_loss"`` or ``"metric_loss"``, or a
        stat name of the CSV ``log_file`` names.
    log_file : str
        The CSV to read in each run's ``logs/`` folder.
    xlabel : str
        What the CSV's first column counts: ``"iteration"``, or ``"epoch"`` for a tester's
        accuracy CSV.
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    plotted = 0
    for exp_dir in exp_dirs:
        curve = mean_loss_curve(exp_dir, column, log_file)
        if curve is None:
            continue
        iterations, mean, n = curve
        ax.plot(iterations, mean, label=f"{ExperimentFolder(exp_dir).name()} ({n} run{'s' if n > 1 else ''})")
        plotted += 1
    ax.set_xlabel(xlabel)
    ax.set_ylabel(column)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
        ax.set_title(f"{column}, mean over runs")
    else:
        ax.set_title(f"no '{column}' found in any {log_file}")
    fig.tight_layout()
    _save(fig, path)


def plot_embedding_map(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    path: PathLike,
    max_classes: int = 20,
) -> None:
    """Scatter the first two principal components of embeddings, coloured by class.

    Only the ``max_classes`` smallest labels are drawn; the principal axes are fitted on those
    points (centred, by SVD).

    Parameters
    ----------
    embeddings : Tensor or ndarray
        Shape ``(N, D)``.
    labels : Tensor or ndarray
        Shape ``(N,)``, integer class labels.
    path : path
        PNG file to write.
    max_classes : int
        Number of classes to draw.
    """
    x = np.asarray(torch.as_tensor(embeddings).detach().cpu(), dtype=np.float64)
    y = np.asarray(torch.as_tensor(labels).detach().cpu()).ravel()
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must have shape (N, D) with N >= 1, got {x.shape}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have one entry per embedding ({x.shape[0]}), got {y.shape[0]}")
    if not isinstance(max_classes, int) or max_classes < 1:
        raise ValueError(f"max_classes must be a positive integer, got {max_classes!r}")
    classes = np.unique(y)[:max_classes]
    keep = np.isin(y, classes)
    points = _pca_2d(x[keep])
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, cls in enumerate(classes):
        sel = y[keep] == cls
        ax.scatter(points[sel, 0], points[sel, 1], s=8, color=cmap(i % cmap.N), label=str(cls))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"test embeddings, {len(classes)} classes (PCA)")
    if len(classes) <= 20:
        ax.legend(fontsize=6, markerscale=1.5, ncol=2, loc="best")
    fig.tight_layout()
    _save(fig, path)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Coordinates of ``x`` on its first two principal axes (zero-padded below two)."""
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords
