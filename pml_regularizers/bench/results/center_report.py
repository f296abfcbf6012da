"""The class centers' geometry in a report: for each experiment, the cosines between its loss's class
centers and the spread of their norms at initialisation and at the tested epoch, and a plot of
them over training (from the fold records of
:mod:`~pml_regularizers.bench.results.center_geometry`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .center_geometry import GEOMETRY_KEYS, read_geometry
from .folder import ExperimentFolder
from .io import write_json
from .trained_epochs import trained_epochs

__all__ = ["center_geometry_section", "center_summary"]

CENTER_GEOMETRY_JSON = "center_geometry.json"


def center_summary(exp_dir: str | os.PathLike) -> dict[str, dict[str, list[float]]]:
    """The class centers' geometry of an experiment: for each key of
    :data:`~pml_regularizers.bench.results.center_geometry.GEOMETRY_KEYS`, its value before the
    first step (``"init"``) and at the epoch each fold tested (``"tested"``), averaged over each
    seed's folds; one value per seed.

    Raises
    ------
    ValueError
        When a fold recorded no geometry (its loss has no class centers), naming the fold.
    """
    folder = ExperimentFolder(Path(exp_dir))
    tested_epoch = {(r.seed, r.fold): r.tested_epoch for r in trained_epochs(exp_dir)}
    summary: dict[str, dict[str, list[float]]] = {k: {"init": [], "tested": []} for k in GEOMETRY_KEYS}
    for seed in folder.seeds():
        per_fold: dict[str, dict[str, list[float]]] = {k: {"init": [], "tested": []} for k in GEOMETRY_KEYS}
        for fold in folder.folds_of(seed):
            if not fold.center_geometry.is_file():
                raise ValueError(f"{fold.path} recorded no class-center geometry (its loss has no class centers)")
            by_epoch = {entry["epoch"]: entry for entry in read_geometry(fold.center_geometry)}
            for key in GEOMETRY_KEYS:
                per_fold[key]["init"].append(by_epoch[0][key])
                per_fold[key]["tested"].append(by_epoch[tested_epoch[fold.seed, fold.fold]][key])
        for key in GEOMETRY_KEYS:
            for when in ("init", "tested"):
                summary[key][when].append(float(np.mean(per_fold[key][when])))
    return summary


def center_geometry_section(exp_dirs: Sequence[str | os.PathLike], out: Path) -> list[str]:
    """The Markdown lines of a report's class-center section for the experiments that have class
    centers, writing ``center_geometry.json`` (every seed's values) and ``center_geometry.png``
    into ``out``; no lines when none has."""
    summaries = {}
    for exp_dir in exp_dirs:
        try:
            summaries[ExperimentFolder(Path(exp_dir)).name()] = center_summary(exp_dir)
        except ValueError:
            continue
    if not summaries:
        return []
    write_json(out / CENTER_GEOMETRY_JSON, summaries)
    _plot(exp_dirs, out / "center_geometry.png")
    lines = [
        "## The class centers' geometry",
        "",
        "Cosines between the loss's class centers (proxies or class weights, L2-normalised) before the "
        "first step and at the tested epoch, and the spread of their norms (coefficient of variation); "
        "the mean over seeds of each seed's fold average. `mean` is over all pairs, `max` the closest "
        "pair, `nearest` the mean over centers of the cosine to their nearest other center "
        f"(`{CENTER_GEOMETRY_JSON}` holds every seed).",
        "",
        "| experiment | mean cos (init → tested) | max cos | nearest cos | norm CV |",
        "|---|---|---|---|---|",
    ]
    for name, values in summaries.items():
        cells = [f"{np.mean(values[k]['init']):.3f} → {np.mean(values[k]['tested']):.3f}" for k in GEOMETRY_KEYS]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return [*lines, "", "![the class centers' geometry over training](center_geometry.png)", ""]


def _plot(exp_dirs: Sequence[str | os.PathLike], path: Path) -> None:
    """The nearest-center cosine and the norm spread after each epoch, averaged over each
    experiment's runs, one line per experiment with class centers."""
    figure = Figure(figsize=(10, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for exp_dir in exp_dirs:
        folder = ExperimentFolder(Path(exp_dir))
        runs = [read_geometry(f.center_geometry) for f in folder.folds() if f.center_geometry.is_file()]
        if not runs:
            continue
        epochs = sorted({entry["epoch"] for run in runs for entry in run})
        for ax, key in zip(axes, ("nearest_cosine", "norm_cv")):
            means = [np.mean([e[key] for run in runs for e in run if e["epoch"] == epoch]) for epoch in epochs]
            ax.plot(epochs, means, marker="o", label=folder.name())
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
