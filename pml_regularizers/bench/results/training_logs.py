"""What record-keeper logged while an experiment trained: its CSV files read, and their columns
averaged over the experiment's training runs (seeds, and folds)."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np

from .folder import ExperimentFolder
from .metric_names import PRIMARY_METRIC
from .report_data import ValidationCurve

__all__ = ["ITERATION_HEADERS", "VAL_LOG", "VAL_MAP_AT_R", "load_loss_history", "mean_loss_curve", "validation_curves"]

PathLike = str | os.PathLike
ITERATION_HEADERS = ("~iteration~", "iteration")
# What PML's tester logs after each epoch of a run with validation: one CSV per tester level.
VAL_LOG = "accuracies_*_VAL_vs_self.csv"
VAL_MAP_AT_R = f"{PRIMARY_METRIC}_level0"


def load_loss_history(csv_path: PathLike) -> dict[str, np.ndarray]:
    """Read a record-keeper ``loss_histories.csv``.

    record-keeper writes a header row whose first cell is ``~iteration~`` followed by the loss
    names, and appends rows on every save; when the set of series changes it appends a new
    header row. Each header applies to the rows after it. Missing or unparsable cells become nan.

    Parameters
    ----------
    csv_path : path
        The CSV file.

    Returns
    -------
    dict of str to numpy.ndarray
        ``"iteration"`` and one array per loss name, all of equal length, sorted by iteration.
        If an iteration is logged twice, the last row wins.
    """
    by_iteration: dict[float, dict[str, float]] = {}
    names: list[str] = []
    header: list[str] | None = None
    with open(csv_path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if row[0] in ITERATION_HEADERS:
                header = row[1:]
                names += [n for n in header if n not in names]
                continue
            if header is None:
                raise ValueError(f"{csv_path} must start with a header row beginning '~iteration~', got {row!r}")
            by_iteration[_to_float(row[0])] = {name: _to_float(cell) for name, cell in zip(header, row[1:])}
    iterations = sorted(by_iteration)
    out = {"iteration": np.asarray(iterations, dtype=np.float64)}
    for name in names:
        out[name] = np.asarray([by_iteration[i].get(name, math.nan) for i in iterations])
    return out


def _to_float(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def mean_loss_curve(
    exp_dir: PathLike, column: str = "total_loss", log_file: str = "loss_histories.csv"
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Mean of one logged column over the training runs (seeds, and folds) of an experiment.

    Parameters
    ----------
    exp_dir : path
        Experiment folder.
    column : str
        Loss (or stat) name as logged by record-keeper.
    log_file : str
        The CSV to read in each run's ``logs/`` folder, as for
        :meth:`~pml_regularizers.bench.results.folder.ExperimentFolder.loss_history_files`.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, int) or None
        Every iteration logged by some run, the mean at each iteration over the runs that logged
        it (nan values ignored), and the number of runs with the column; ``None`` when no run
        logged the column.
    """
    curves = []
    for csv_path in ExperimentFolder(exp_dir).loss_history_files(log_file):
        history = load_loss_history(csv_path)
        if column in history:
            curves.append(dict(zip(history["iteration"], history[column])))
    if not curves:
        return None
    iterations = np.asarray(sorted(set().union(*curves)))
    stacked = np.asarray([[c.get(i, math.nan) for i in iterations] for c in curves])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an iteration where every value is nan
        return iterations, np.nanmean(stacked, axis=0), len(curves)


def validation_curves(
    exp_dirs: Sequence[PathLike], column: str = VAL_MAP_AT_R, log_file: str = VAL_LOG
) -> list[ValidationCurve]:
    """Validation accuracy after each epoch, per experiment, averaged over its training runs.

    Each curve is :func:`mean_loss_curve` of the tester's accuracy CSV, whose first column counts
    epochs: at each epoch, the mean over the runs (seeds and folds) that validated then, so an
    epoch some runs did not reach (early stopping) averages the others.

    Parameters
    ----------
    exp_dirs : sequence of path
        Experiment folders.
    column : str
        The accuracy column, by default MAP@R of the tester's first level.
    log_file : str
        The accuracy CSV's name in each ``logs/`` folder (a glob pattern).

    Returns
    -------
    list of ValidationCurve
        One per experiment that logged the column, in the order of ``exp_dirs``.
    """
    curves = []
    for exp_dir in exp_dirs:
        curve = mean_loss_curve(exp_dir, column, log_file)
        if curve is not None:
            epochs, values, runs = curve
            curves.append(ValidationCurve(ExperimentFolder(exp_dir).name(), epochs.tolist(), values.tolist(), runs))
    return curves
