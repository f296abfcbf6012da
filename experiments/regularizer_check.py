# A regularizer reality check on the full Omniglot background set (964 characters x 20 drawers).
#
# Every row against the same base loss without any regularizer, under one protocol and one budget:
#   ProxyAnchor and NormalizedSoftmax (losses with class centers), each with SkewedMeanRegularizer,
#       PML's RegularFaceRegularizer and PML's CenterInvariantRegularizer on the class centers;
#   MultiSimilarity + miner, with DVML, and with JacobianDeterminantRegularizer on the flow
#       embedder (against the bare flow and against the linear embedder).
# Protocol (the evidence study's, experiments/evidence.py, at a schedule that fits the budget of
# 10 CPU-hours for both embedding sizes: 4 epochs, 2 class-disjoint folds, a 2-point grid per row):
# classes sorted, the first 482 characters train and the last 482 test; hyperparameters are searched
# on class-disjoint validation folds of the training characters only (the learning rate for each
# base, then each method's grid at its base's learning rate: the same number of configurations,
# epochs and folds for every row); the chosen settings run 5 seeds and are tested once. Each run's
# wall and CPU seconds are kept in <out>/timing/<experiment>.json, which the reports sum.
#
# Run (Omniglot from ../shared/omniglot; resumable: run it again to continue):
#     .venv/bin/python -m experiments.regularizer_check --root ../shared/omniglot/images_background.npz \
#         --embedding-size 32 --jobs 2
#     ... --embedding-size 128 --jobs 2
# Tiny smoke run (seconds, generated glyphs, what CI runs): ... --size tiny
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.evidence import best_point, run_all, run_named, script_command, search_runs
from pml_regularizers.bench import (
    GEOMETRY_KEYS,
    VAL_LOG,
    VAL_MAP_AT_R,
    ExperimentFolder,
    plot_training_curves,
    read_checkpoint,
    read_geometry,
    write_json,
    write_report,
)

LR_GRID = (("optimizer.lr=0.001",), ("optimizer.lr=0.003",))
# Each weight regularizer at its loss weight (weight_reg_weight) 0.1 and 1.0, PML's default; the
# others at their defaults (SkewedMeanRegularizer: lam 4).
WEIGHT_GRID = (("regularizer.weight=0.1",), ("regularizer.weight=1.0",))
# DVML's phase 2 (decoder gradients released) from epoch 2 or 3 of 4: its start is not published.
DVML_GRID = (("trainer.phase2_start_epoch=2",), ("trainer.phase2_start_epoch=3",))
# The square penalty at the two weights the evidence studies chose (0.01 at 128-d, 0.1 at 32-d).
JD_GRID = (("regularizer.weight=0.01",), ("regularizer.weight=0.1",))

_PA = ("loss=proxy_anchor",)
_NS = ("loss=normalized_softmax",)
_MS = ("loss=multi_similarity", "miner=multi_similarity", "sampler=m_per_class")


@dataclass(frozen=True)
class Role:
    """One row of a family: its fixed overrides, its search grid, and the role whose chosen learning
    rate it runs at (None: the grid is the learning rate's)."""

    fixed: tuple[str, ...]
    grid: tuple[tuple[str, ...], ...]
    lr_from: str | None = None


def _weight_family(base: tuple[str, ...]) -> dict[str, Role]:
    return {
        "baseline": Role(base, LR_GRID),
        **{
            name: Role((*base, f"regularizer={name}"), WEIGHT_GRID, "baseline")
            for name in ("skewed_mean", "regular_face", "center_invariant")
        },
    }


# Families share their baseline; experiment names are "<family tag>-<role>".
FAMILIES: dict[str, dict[str, Role]] = {
    "proxy_anchor": _weight_family(_PA),
    "normalized_softmax": _weight_family(_NS),
    "multi_similarity": {
        "baseline": Role(_MS, LR_GRID),
        "flow": Role((*_MS, "embedder=flow"), LR_GRID),
        "dvml": Role((*_MS, "embedder=dvml", "trainer=dvml"), DVML_GRID, "baseline"),
        "jacobian_determinant": Role(
            (*_MS, "embedder=flow", "regularizer=jacobian_determinant", "regularizer.penalty=square"), JD_GRID, "flow"
        ),
    },
}
# The reports: (family, baseline role, roles in the table, title).
REPORTS = {
    "proxy_anchor": ("proxy_anchor", "baseline", None, "Weight regularizers on ProxyAnchor's proxies"),
    "normalized_softmax": (
        "normalized_softmax",
        "baseline",
        None,
        "Weight regularizers on NormalizedSoftmax's class weights",
    ),
    "multi_similarity": ("multi_similarity", "baseline", None, "DVML and the flow embedder on MultiSimilarity + miner"),
    "flow_multi_similarity": (
        "multi_similarity",
        "flow",
        ("flow", "jacobian_determinant", "baseline"),
        "JacobianDeterminantRegularizer against the bare flow (and the linear embedder) on MultiSimilarity + miner",
    ),
}
WEIGHT_FAMILIES = ("proxy_anchor", "normalized_softmax")

# name: (dataset and schedule overrides, search seeds, final seeds)
SIZES = {
    "tiny": (
        (
            "dataset=glyphs",
            "dataset.size=16",
            "dataset.options.num_classes=24",
            "dataset.options.per_class=6",
            "epochs=1",
            "batch_size=24",
            "cv_folds=2",
        ),
        1,
        2,
    ),
    "full": (("epochs=4", "cv_folds=2", "batch_size=64"), 1, 5),
}
TIMING = "timing"


def timed_run(name: str, overrides: list[str], out: Path, cache: Path | None) -> Path:
    """:func:`~experiments.evidence.run_named`, adding the wall and CPU seconds this process spent on
    it to ``<out>/timing/<name>.json`` as soon as it finishes (near 0 for a finished experiment,
    which is not recomputed). A run cut off by the end of a session is not counted, only the
    rest of it when it resumes: the recorded budget is a lower bound."""
    wall, cpu = time.perf_counter(), time.process_time()
    path = run_named(name, overrides, out, cache)
    record = out / TIMING / f"{name}.json"
    spent = json.loads(record.read_text()) if record.is_file() else {"wall_s": 0.0, "cpu_s": 0.0}
    spent["wall_s"] += time.perf_counter() - wall
    spent["cpu_s"] += time.process_time() - cpu
    write_json(record, spent)
    return path


def read_timing(out: Path) -> dict[str, dict[str, float]]:
    """The seconds :func:`timed_run` recorded, by experiment name."""
    return {record.stem: json.loads(record.read_text()) for record in sorted((out / TIMING).glob("*.json"))}


def run_size(
    dataset: list[str],
    size: str,
    embedding_size: int,
    out: Path,
    docs: Path,
    cache: Path | None,
    command: str,
    jobs: int,
) -> list[Path]:
    """The whole check at one embedding size: searches, final runs and the reports; the report folders."""
    schedule, search_seeds, final_seeds = SIZES[size]
    data = "omniglot964" if size == "full" else "glyphs-tiny"
    common = [*schedule, *dataset, f"embedding_size={embedding_size}"]
    tags = {family: f"regularizer_check_{family}-{data}-d{embedding_size}" for family in FAMILIES}

    def search(family: str, role_names: list[str], lr: dict[tuple[str, str], tuple[str, ...]]) -> tuple[list, list]:
        runs: list[tuple[str, list[str]]] = []
        layout = []
        for role_name in role_names:
            role = FAMILIES[family][role_name]
            fixed = [*common, *role.fixed, *(lr[family, role.lr_from] if role.lr_from else ())]
            role_runs = search_runs(f"{tags[family]}-{role_name}", fixed, role.grid, search_seeds)
            runs += role_runs
            layout.append((family, role_name, fixed, len(role_runs)))
        return runs, layout

    # 1. the learning-rate searches of every base (independent), 2. each method's grid at its
    # base's learning rate, 3. the final runs.
    lr: dict[tuple[str, str], tuple[str, ...]] = {}
    searches: dict[tuple[str, str], list[tuple[str, Path, float]]] = {}
    finals: dict[tuple[str, str], list[str]] = {}
    for phase in ("lr", "method"):
        runs, layout = [], []
        for family, roles in FAMILIES.items():
            names = [n for n, r in roles.items() if (r.lr_from is None) == (phase == "lr")]
            family_runs, family_layout = search(family, names, lr)
            runs += family_runs
            layout += family_layout
        dirs = iter(run_all(runs, out, cache, jobs, worker=timed_run))
        for family, role_name, fixed, count in layout:
            grid = FAMILIES[family][role_name].grid
            point, searches[family, role_name] = best_point(grid, [next(dirs) for _ in range(count)])
            finals[family, role_name] = [*fixed, *point]
            if phase == "lr":
                lr[family, role_name] = point
    final_runs = [(f"{tags[f]}-{r}", [*o, f"seeds={final_seeds}"]) for (f, r), o in finals.items()]
    final_dirs = dict(zip(finals, run_all(final_runs, out, cache, jobs, worker=timed_run)))

    report_dirs = []
    timing = read_timing(out)
    for report, (family, baseline, roles, title) in REPORTS.items():
        names = roles or tuple(FAMILIES[family])
        dirs = [final_dirs[family, r] for r in names]
        report_dir = docs / f"regularizer_check_{report}-{data}-d{embedding_size}"
        text = write_report(
            dirs,
            report_dir,
            baseline=f"{tags[family]}-{baseline}",
            title=f"{title} (Omniglot, 964 characters, {embedding_size}-d)",
            command=command,
        )
        extra = _search_section(family, names, searches, finals, search_seeds)
        extra += _budget_section(timing, tags.values())
        curves = [(VAL_LOG, VAL_MAP_AT_R)]
        if family in WEIGHT_FAMILIES:
            geometry = {r: center_summary(final_dirs[family, r]) for r in names}
            extra += _geometry_section(geometry)
            write_json(report_dir / "center_geometry.json", geometry)
            curves.append(("*_SkewedMeanRegularizer.csv", "skewed_mean"))
            plot_geometry(dirs, report_dir / "center_geometry.png")
            extra += ["![the class centers' geometry over training](center_geometry.png)", ""]
        for log_file, column in curves:
            png = f"curve_{column}.png"
            plot_training_curves(
                dirs, report_dir / png, column, log_file, "epoch" if column == VAL_MAP_AT_R else "iteration"
            )
            extra += [f"![{column} over training]({png})", ""]
        (report_dir / "report.md").write_text(text + "\n" + "\n".join(extra))
        report_dirs.append(report_dir)
    return report_dirs


def _search_section(
    family: str,
    names: tuple[str, ...],
    searches: dict[tuple[str, str], list[tuple[str, Path, float]]],
    finals: dict[tuple[str, str], list[str]],
    search_seeds: int,
) -> list[str]:
    lines = [
        "## Hyperparameter search (validation only)",
        "",
        f"Best validation MAP@R averaged over the folds, {search_seeds} seed(s) per configuration; the test "
        "characters are not used. Each base searched the learning rate; each method its own grid at its "
        "base's chosen learning rate: the same number of configurations for every row.",
        "",
        "| row | configuration | validation MAP@R | chosen |",
        "|---|---|---|---|",
    ]
    for role in names:
        chosen = set(finals[family, role])
        for label, _, score in searches[family, role]:
            lines.append(f"| {role} | `{label}` | {score:.4f} | {'yes' if set(label.split()) <= chosen else ''} |")
    return [*lines, ""]


def _budget_section(timing: dict[str, dict[str, float]], tags) -> list[str]:
    spent = {name: t for name, t in timing.items() if any(name.startswith(f"{tag}-") for tag in tags)}
    searches = [t["cpu_s"] for name, t in spent.items() if "-search-" in name]
    cpu = sum(t["cpu_s"] for t in spent.values()) / 3600
    wall = sum(t["wall_s"] for t in spent.values()) / 3600
    return [
        "## Budget",
        "",
        "The check had 10 CPU-hours for both embedding sizes. One search run (1 seed, 2 folds of 4 "
        "epochs) was measured first; the schedule (4 epochs, 2 folds, a 2-point grid per row, 5 final "
        "seeds) was chosen to fit. Measured at this embedding size, over every family's searches and "
        f"final runs ({len(spent)} experiments): {cpu:.2f} CPU-hours, {wall:.2f} hours of process wall "
        f"time summed over the processes that ran side by side; a search run took {np.mean(searches):.0f} "
        "CPU-seconds on average. A run cut off by the end of a session counts only from its resumption, "
        "so these are lower bounds.",
        "",
    ]


def center_summary(exp_dir: Path) -> dict[str, dict[str, list[float]]]:
    """The class centers' geometry of an experiment's runs: for each key of
    :data:`~pml_regularizers.bench.results.center_geometry.GEOMETRY_KEYS`, the value at initialisation
    (``"init"``, before the first step) and at the tested epoch (``"tested"``), averaged over each
    seed's folds, one value per seed."""
    folder = ExperimentFolder(exp_dir)
    out: dict[str, dict[str, list[float]]] = {k: {"init": [], "tested": []} for k in GEOMETRY_KEYS}
    for seed in folder.seeds():
        per_fold: dict[str, dict[str, list[float]]] = {k: {"init": [], "tested": []} for k in GEOMETRY_KEYS}
        for fold in folder.folds_of(seed):
            entries = {e["epoch"]: e for e in read_geometry(fold.center_geometry)}
            state = read_checkpoint(fold.latest)["state"]
            tested = state["best_epoch"] if fold.tests_best(True) else state["epoch"]
            for key in GEOMETRY_KEYS:
                per_fold[key]["init"].append(entries[0][key])
                per_fold[key]["tested"].append(entries[tested][key])
        for key in GEOMETRY_KEYS:
            for when in ("init", "tested"):
                out[key][when].append(float(np.mean(per_fold[key][when])))
    return out


def _geometry_section(geometry: dict[str, dict[str, dict[str, list[float]]]]) -> list[str]:
    lines = [
        "## The class centers' geometry",
        "",
        "Cosines between the class centers (the loss's proxies or class weights, L2-normalised) at "
        "initialisation and at the tested epoch, and the spread of their norms (coefficient of "
        "variation); mean over seeds of each seed's fold average. `mean` is over all pairs, `max` the "
        "closest pair, `nearest` the mean over centers of the cosine to their nearest other center "
        "(`center_geometry.json` holds every seed).",
        "",
        "| row | mean cos (init → tested) | max cos | nearest cos | norm CV |",
        "|---|---|---|---|---|",
    ]
    for role, values in geometry.items():
        cells = [f"{np.mean(values[k]['init']):.3f} → {np.mean(values[k]['tested']):.3f}" for k in GEOMETRY_KEYS]
        lines.append(f"| {role} | {' | '.join(cells)} |")
    return [*lines, ""]


def plot_geometry(exp_dirs: list[Path], path: Path) -> None:
    """The mean over each experiment's runs of the nearest-center cosine and the norm spread after
    each epoch, one line per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for exp_dir in exp_dirs:
        folder = ExperimentFolder(exp_dir)
        runs = [read_geometry(fold.center_geometry) for fold in folder.folds()]
        epochs = sorted({e["epoch"] for run in runs for e in run})
        for ax, key in zip(axes, ("nearest_cosine", "norm_cv")):
            means = [np.mean([e[key] for run in runs for e in run if e["epoch"] == ep]) for ep in epochs]
            ax.plot(epochs, means, marker="o", label=exp_dir.name.rsplit("-", 1)[-1])
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A regularizer reality check on the full Omniglot background set.")
    parser.add_argument("--root", help="the .npz file of images and labels (../shared/omniglot/images_background.npz)")
    parser.add_argument("--embedding-size", type=int, default=32)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="experiments run at once (default 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/regularizer_check"), help="experiment folders")
    parser.add_argument("--docs", type=Path, default=Path("docs/results"), help="where reports go")
    parser.add_argument("--cache", type=Path, help="dataset cache folder (default: the config's)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.size == "full" and not args.root:
        parser.error("--root is needed for the full check (the .npz file of Omniglot's background set)")
    dataset = ["dataset=arrays", f"dataset.root={args.root}"] if args.size == "full" else []
    command = script_command("experiments.regularizer_check", argv)
    for report_dir in run_size(
        dataset, args.size, args.embedding_size, args.out, args.docs, args.cache, command, args.jobs
    ):
        print(report_dir / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
