# Measurements inside finished experiments, shared by the experiment scripts that look at trained
# models (dvml_samples.py, flow_volume.py).
#
# For every finished fold of an experiment folder (made by experiments/evidence.py or pml-bench) it
# rebuilds the trunk and embedder from the folder's config, loads the models the runner tested
# (the best validation epoch's, or the last epoch's in a run without cross-validation) and
# embeds the fold's own training classes with the trunk, so the test classes are never used. A
# measurement is a function of (embedder, trunk features, labels) that returns named figures; the
# report has one row per experiment with each figure's mean and standard deviation over its folds.
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from evidence import script_command, val_score
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pml_regularizers.bench.data import TensorImageDataset, class_disjoint_split, training_folds
from pml_regularizers.bench.report import experiment_command, load_records, provenance_lines
from pml_regularizers.bench.runner import load_experiment_data

Measure = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], dict[str, float]]
Figures = Callable[[Path], tuple[dict[str, list[float]], int]]


def tested_checkpoint(fold_dir: Path, validated: bool) -> Path | None:
    """The checkpoint of ``fold_dir`` whose models the runner tested, or None before the fold finished.

    That is the best validation epoch's (``checkpoint_best.pt``) for a ``validated`` fold, as the
    runner keeps it, and otherwise the last epoch's (``checkpoint_latest.pt``).
    """
    latest, best = fold_dir / "checkpoint_latest.pt", fold_dir / "checkpoint_best.pt"
    if not latest.exists() or not torch.load(latest, map_location="cpu", weights_only=True)["state"]["done"]:
        return None
    return best if validated and best.exists() else latest


@torch.no_grad()
def measure_folds(exp_dir: Path, embedder: str, kind: str, measure: Measure) -> tuple[dict[str, list[float]], int]:
    """``measure`` on every finished fold of ``exp_dir``: each figure's values over the folds, and the count.

    ``embedder`` is the config choice the experiment must have (``dvml``, ``flow``); ``kind`` names
    such an experiment in the error raised for any other.
    """
    cfg = OmegaConf.load(exp_dir / "config.yaml")
    if cfg.choices.embedder != embedder:
        raise ValueError(f"{exp_dir} is not a {kind} experiment (embedder={cfg.choices.embedder})")
    data = load_experiment_data(cfg)
    train_classes, _ = class_disjoint_split(data.labels)
    folds = training_folds(train_classes, cfg.cv_folds)
    trunk = instantiate(cfg.trunk).eval()
    model = instantiate(cfg.embedder, in_features=trunk.output_size, out_features=cfg.embedding_size).eval()
    values: dict[str, list[float]] = {}
    count = 0
    for fold_dir in sorted(exp_dir.glob("seed_*/fold_*")):
        checkpoint = tested_checkpoint(fold_dir, validated=bool(cfg.cv_folds))
        if checkpoint is None:
            continue
        fold = int(fold_dir.name.split("_")[1])
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
        trunk.load_state_dict(payload["models"]["trunk"])
        model.load_state_dict(payload["models"]["embedder"])
        loader = torch.utils.data.DataLoader(
            TensorImageDataset(data.subset(folds[fold][0]), augment=False), batch_size=256
        )
        features, labels = zip(*((trunk(x), y) for x, y in loader))
        for name, value in measure(model, torch.cat(features), torch.cat(labels)).items():
            values.setdefault(name, []).append(value)
        count += 1
    if not count:
        raise FileNotFoundError(f"no finished fold (seed_*/fold_*/ with a finished checkpoint_latest.pt) in {exp_dir}")
    return values, count


def validation_score(exp_dir: Path) -> str:
    """Mean validation MAP@R over the seeds of a finished experiment, or "–" before it has finished
    and for a run without cross-validation."""
    finished = (exp_dir / "results.json").exists()
    validated = finished and any(r["split"] == "val" for r in load_records(exp_dir))
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
        rows.append(f"| `{exp_dir.name}` | {validation_score(exp_dir)} | {count} | " + " | ".join(
            f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}" for v in values.values()
        ) + " |")
    return "\n".join([
        f"# {title}",
        "",
        *provenance_lines(command, [c for c in map(experiment_command, exp_dirs) if c]),
        "Each fold's tested models (its best validation epoch's, or its last epoch's without "
        "cross-validation), embedding the fold's own training classes (the test classes are not used). "
        "Mean ± standard deviation over the folds of all seeds. Validation MAP@R: the experiment's own, "
        f"mean over its seeds. {note}",
        "",
        "| Experiment | validation MAP@R | folds | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
        *rows,
        "",
    ])


def report_main(
    argv: list[str] | None, script: str, description: str, kind: str, title: str, figures: Figures, note: str
) -> int:
    """The command line of a script that reports ``figures`` of finished ``kind`` experiments.

    ``script`` is its path as the report quotes it; ``title`` the default heading. Writes
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
