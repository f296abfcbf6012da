# Measurements inside finished experiments, shared by the experiment scripts that look at trained
# models (dvml_samples.py, flow_volume.py).
#
# For every finished fold of an experiment folder (made by pml-bench) it
# takes the models the runner tested (the best validation epoch's, or the last epoch's in a run
# without cross-validation), rebuilt by the folder (pml_regularizers.bench.ExperimentFolder), and
# embeds the fold's own training classes with the trunk, so the test classes are never used. A
# measurement is a function of (embedder, trunk features, labels) that returns named figures; the
# report has one row per experiment with each figure's mean and standard deviation over its folds.
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from experiments.scripts import script_command, val_score
from pml_regularizers.bench import (
    ExperimentFolder,
    experiment_data,
    experiment_split,
    provenance_lines,
    torch_dataset,
    trained_models,
)

Measure = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], dict[str, float]]
Figures = Callable[[Path], tuple[dict[str, list[float]], int]]


@torch.no_grad()
def measure_folds(exp_dir: Path, embedder: str, kind: str, measure: Measure) -> tuple[dict[str, list[float]], int]:
    """``measure`` on every finished fold of ``exp_dir``: each figure's values over the folds, and the count.

    ``embedder`` is the config choice the experiment must have (``dvml``, ``flow``); ``kind`` names
    such an experiment in the error raised for any other.
    """
    folder = ExperimentFolder(exp_dir)
    spec = folder.spec()
    if spec.choices["embedder"] != embedder:
        raise ValueError(f"{exp_dir} is not a {kind} experiment (embedder={spec.choices['embedder']})")
    data = experiment_data(folder)
    _, _, folds = experiment_split(folder, data)
    values: dict[str, list[float]] = {}
    count = 0
    for fold in folder.folds():
        models = trained_models(folder, fold, data)
        if models is None:
            continue
        dataset = torch_dataset(data.subset(folds[fold.fold][0]), spec.data, train=False)
        loader = torch.utils.data.DataLoader(dataset, batch_size=256)
        features, labels = zip(*((models["trunk"](x), y) for x, y in loader))
        for name, value in measure(models["embedder"], torch.cat(features), torch.cat(labels)).items():
            values.setdefault(name, []).append(value)
        count += 1
    if not count:
        raise FileNotFoundError(f"no finished fold in {exp_dir}: no seed_*/fold_* has finished training")
    return values, count


def validation_score(exp_dir: Path) -> str:
    """Mean validation MAP@R over the seeds of a finished experiment, or "–" before it has finished
    and for a run without cross-validation."""
    folder = ExperimentFolder(exp_dir)
    validated = folder.results_path.exists() and any(r["split"] == "val" for r in folder.records())
    return f"{val_score(exp_dir):.4f}" if validated else "–"


def fold_report(
    exp_dirs: list[Path],
    figures: Figures,
    command: str,
    title: str,
    note: str,
) -> str:
    """The markdown report of ``figures`` (a :func:`measure_folds` of one experiment folder) over
    ``exp_dirs``: the heading, provenance, ``note`` and one row per experiment."""
    rows, names = [], None
    for exp_dir in exp_dirs:
        values, count = figures(exp_dir)
        names = list(values)
        rows.append(
            f"| `{exp_dir.name}` | {validation_score(exp_dir)} | {count} | "
            + " | ".join(f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}" for v in values.values())
            + " |"
        )
    return "\n".join(
        [
            f"# {title}",
            "",
            *provenance_lines(command, [c for c in (ExperimentFolder(d).command() for d in exp_dirs) if c]),
            "Each fold's tested models (its best validation epoch's, or its last epoch's without "
            "cross-validation), embedding the fold's own training classes (the test classes are not used). "
            "Mean ± standard deviation over the folds of all seeds. Validation MAP@R: the experiment's own, "
            f"mean over its seeds. {note}",
            "",
            "| Experiment | validation MAP@R | folds | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names),
            *rows,
            "",
        ]
    )


def report_main(
    argv: list[str] | None, script: str, description: str, kind: str, title: str, figures: Figures, note: str
) -> int:
    """The command line of a script that reports ``figures`` of finished ``kind`` experiments.

    ``script`` is its module (``experiments.<name>``), which the report quotes in the command that
    made it; ``title`` the default heading. Writes
    ``report.md`` into ``--out`` and prints it.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("experiments", nargs="+", type=Path, help=f"{kind} experiment folders")
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.md is written there)")
    parser.add_argument("--title", default=title, help="the report's heading")
    args = parser.parse_args(argv)
    text = fold_report(args.experiments, figures, script_command(script, argv), args.title, note)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    print(text)
    return 0
