# Why does SkewedMeanRegularizer not move retrieval? A weight sweep on validation, with the class
# centers' geometry and the regularizer's own statistic over training.
#
# For one dataset, embedding size and loss with class centers (ProxyAnchor's proxies or
# NormalizedSoftmax's class weights) it runs, through the benchmark runner and on validation only
# (test=false, class-disjoint 4-fold CV on the training half, the evidence study's search seed),
# the loss with the regularizer at weights 0, 0.1, 1, 10 and 100 (lam fixed). Weight 0 attaches
# the regularizer so its statistic is logged, but adds nothing to the loss: it is the baseline.
# For each weight the report gives
#   - the validation MAP@R (best epoch, mean over folds) and the epoch it peaked at;
#   - the class centers of each fold's best checkpoint: largest, mean and skewed-mean cosine
#     similarity between different classes' centers, next to the same figures for random Gaussian
#     centers of the same shape (what they start from);
#   - plots of the skewed mean over training and of validation MAP@R per epoch.
# Every run is resumable, like the evidence study's.
#
# Run (Omniglot, 32-d, the learning rate the evidence study chose):
#     .venv/bin/python -m experiments.skewed_mean_sweep --dataset omniglot --root ../shared/omniglot \
#         --embedding-size 32 --lr 0.003
# The same for NormalizedSoftmax's class weights: add --loss normalized_softmax.
# Tiny smoke run (glyphs, seconds):  ... -m experiments.skewed_mean_sweep --size tiny
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from experiments.evidence import (
    SIZES,
    VAL_CURVE,
    add_run_arguments,
    dataset_name,
    dataset_overrides,
    run_named,
    script_command,
    val_score,
)
from pml_regularizers.bench import ExperimentFolder, mean_loss_curve, provenance_lines, read_checkpoint
from pml_regularizers.functional import gram_pairwise_skewed_mean, pairwise_cosine_stats

WEIGHTS = (0.0, 0.1, 1.0, 10.0, 100.0)
# loss choice: (its name in titles, how its class centers are read from the loss's state dict, one row a class)
LOSSES = {
    "proxy_anchor": ("ProxyAnchor", lambda state: state["proxies"]),
    "normalized_softmax": ("NormalizedSoftmax", lambda state: state["W"].t()),
}
_REG_CURVE = ("*_SkewedMeanRegularizer.csv", "skewed_mean")


def proxy_geometry(proxies: torch.Tensor, lam: float) -> tuple[float, float, float]:
    """``(largest, mean, skewed mean)`` cosine similarity between different rows of ``proxies``."""
    largest, mean = pairwise_cosine_stats(proxies)
    unit = torch.nn.functional.normalize(proxies.double(), dim=1)
    return largest, mean, float(gram_pairwise_skewed_mean(unit, lam))


def _tested_checkpoints(exp_dir: Path) -> list[dict]:
    """The checkpoint the runner tested of each finished fold of ``exp_dir`` (its best validation
    epoch's), by seed then fold."""
    folder = ExperimentFolder(exp_dir)
    paths = (folder.tested_checkpoint(fold) for fold in folder.folds())
    return [read_checkpoint(path) for path in paths if path is not None]


def sweep(
    dataset: list[str],
    size: str,
    embedding_size: int,
    lr: float,
    lam: float,
    out: Path,
    docs: Path,
    cache: Path | None,
    command: str,
    loss: str = "proxy_anchor",
) -> str:
    schedule, search_seeds, _ = SIZES[size]
    data_name = dataset_name([*schedule, *dataset])
    loss_title, centers_of = LOSSES[loss]
    # ProxyAnchor's sweep keeps its first reports' name
    study = "skewed_mean_sweep" if loss == "proxy_anchor" else f"skewed_mean_sweep_{loss}"
    tag = f"{study}-{data_name}-d{embedding_size}"
    fixed = [
        *schedule,
        *dataset,
        f"embedding_size={embedding_size}",
        f"loss={loss}",
        f"optimizer.lr={lr}",
        "regularizer=skewed_mean",
        f"regularizer.lam={lam}",
        "test=false",
        f"seeds={search_seeds}",
        "seed_offset=100",
    ]
    runs = {w: run_named(f"{tag}-weight{w:g}", [*fixed, f"regularizer.weight={w}"], out, cache) for w in WEIGHTS}

    report_dir = docs / tag
    report_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    lines = [
        f"# SkewedMeanRegularizer weight sweep on {loss_title} ({data_name}, {embedding_size}-d)",
        "",
        *provenance_lines(command, [c for c in (ExperimentFolder(d).command() for d in runs.values()) if c]),
        f"Validation only ({search_seeds} seed, class-disjoint folds of the training half; the test classes are "
        f"not used). Learning rate {lr:g}, lam {lam:g}. Weight 0 logs the regularizer's statistic but adds "
        "nothing to the loss. Class-center figures (ProxyAnchor's proxies, NormalizedSoftmax's class weights): "
        "cosine similarity between different classes' centers in each fold's best checkpoint, mean over "
        "folds; the random row is Gaussian centers of the same shape.",
        "",
        "| weight | validation MAP@R | best epoch (per fold) | largest cosine | mean cosine "
        f"| skewed mean (lam {lam:g}) |",
        "|---|---|---|---|---|---|",
    ]
    shape = None
    for w, exp_dir in runs.items():
        geometry, epochs = [], []
        for state in _tested_checkpoints(exp_dir):
            centers = centers_of(state["loss"])
            shape = tuple(centers.shape)
            geometry.append(proxy_geometry(centers, lam))
            epochs.append(str(state["state"]["best_epoch"]))
        largest, mean, skewed = np.mean(geometry, axis=0)
        lines.append(
            f"| {w:g} | {val_score(exp_dir):.4f} | {', '.join(epochs)} | {largest:.4f} | {mean:.4f} | {skewed:.4f} |"
        )
    random_rows = [proxy_geometry(torch.randn(shape, generator=generator), lam) for _ in range(len(geometry))]
    largest, mean, skewed = np.mean(random_rows, axis=0)
    lines += [f"| random Gaussian {shape[0]}×{shape[1]} | | | {largest:.4f} | {mean:.4f} | {skewed:.4f} |", ""]

    fig = Figure(figsize=(11, 4))
    ax_reg, ax_val = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for w, exp_dir in runs.items():
        for ax, (log_file, column) in ((ax_reg, _REG_CURVE), (ax_val, VAL_CURVE)):
            curve = mean_loss_curve(exp_dir, column, log_file)
            if curve is not None:
                ax.plot(*curve[:2], marker="o" if ax is ax_val else None, label=f"weight {w:g}")
    ax_reg.set(
        xlabel="iteration",
        ylabel=f"skewed mean of class-center cosines (lam {lam:g})",
        title="regularizer statistic, mean over folds",
    )
    ax_val.set(xlabel="epoch", ylabel="validation MAP@R", title="validation MAP@R, mean over folds")
    for ax in (ax_reg, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(report_dir / "sweep.png", dpi=110)
    lines += ["![regularizer statistic and validation MAP@R over training](sweep.png)", ""]
    text = "\n".join(lines)
    (report_dir / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SkewedMeanRegularizer weight sweep (validation only).")
    add_run_arguments(parser)
    parser.add_argument(
        "--loss", choices=sorted(LOSSES), default="proxy_anchor", help="the loss whose class centers are regularized"
    )
    parser.add_argument("--lr", type=float, default=0.003, help="Adam learning rate (the evidence study's choice)")
    parser.add_argument("--lam", type=float, default=4.0)
    args = parser.parse_args(argv)
    command = script_command("experiments.skewed_mean_sweep", argv)
    print(
        sweep(
            dataset_overrides(args),
            args.size,
            args.embedding_size,
            args.lr,
            args.lam,
            args.out,
            args.docs,
            args.cache,
            command,
            args.loss,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
