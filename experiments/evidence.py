# The evidence study: does each plugin method help retrieval on unseen classes?
#
# For one study (a method on one base loss), one dataset and one embedding size it runs, through
# the benchmark runner:
#   1. the hyperparameter search, on validation only (test=false, class-disjoint 4-fold CV on the
#      training half): the baseline's grid, then the method's grid at the baseline's chosen
#      learning rate -- the same number of configurations for both;
#   2. the final runs of the chosen baseline and method (and the study's extra comparators), with
#      several seeds, testing each once on the held-out classes;
#   3. the report (tables with 95% intervals, paired differences, plots) into docs/results/<name>/,
#      with the search, its budget and the command that made it.
# Every step is resumable: run the same command again and finished runs are not recomputed.
#
# Run (Omniglot from ../shared/omniglot, 32-d embeddings, ProxyAnchor +- SkewedMeanRegularizer):
#     .venv/bin/python -m experiments.evidence skewed_mean_proxy_anchor --dataset omniglot \
#         --root ../shared/omniglot --embedding-size 32
# The published Omniglot studies ran on the two official small zips (242 characters). A root that
# also holds images_background.npz now gives the full background set (964 characters) instead: to
# repeat them, pass a root that holds only images_background_small1.zip and _small2.zip.
# On the offline glyphs at the main command's 10 instances per class (report tag ...-glyphs-n10-d32):
#     .venv/bin/python -m experiments.evidence skewed_mean_proxy_anchor --per-class 10
# List the studies:  .venv/bin/python -m experiments.evidence --list
# Tiny smoke run (seconds, glyphs, what CI runs):  ... -m experiments.evidence skewed_mean_proxy_anchor --size tiny
# --jobs N runs up to N independent experiments at once, each in its own process: the baseline's
# and the comparators' searches, then the method's search, then the final runs. The results are
# those of a sequential run; only the order of work changes.
from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from pml_regularizers.bench import (
    VAL_LOG,
    VAL_MAP_AT_R,
    ExperimentFolder,
    load_spec,
    markdown_table,
    plot_training_curves,
    run_experiment,
    summarize,
    write_report,
)

PRIMARY = "mean_average_precision_at_r"
# Adam learning rates; the first Omniglot study chose the top of (3e-4, 1e-3, 3e-3), so the grid moved up.
LR_GRID = ("optimizer.lr=0.001", "optimizer.lr=0.003", "optimizer.lr=0.01")


@dataclass(frozen=True)
class Study:
    """A method against its base loss: fixed overrides, and one search grid for each side."""

    base: tuple[str, ...]
    method: tuple[str, ...]
    method_grid: tuple[tuple[str, ...], ...]
    extra: dict[str, tuple[str, ...]]  # further comparators, searched over LR_GRID like the baseline
    description: str
    curves: tuple[tuple[str, str], ...] = ()  # (log file glob, column) plotted over training


VAL_CURVE = (VAL_LOG, VAL_MAP_AT_R)
_SM_CURVES = (("*_SkewedMeanRegularizer.csv", "skewed_mean"),)
_JD_CURVES = (("*_JacobianDeterminantRegularizer.csv", "logdet_mean"),)
_DVML_CURVES = tuple(
    ("loss_histories.csv", c) for c in ("kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss")
)


_PA = ("loss=proxy_anchor",)
_NS = ("loss=normalized_softmax",)
_MS = ("loss=multi_similarity", "miner=multi_similarity", "sampler=m_per_class")
_TRIPLET = ("loss=triplet", "miner=triplet_margin", "sampler=m_per_class")
_SM_GRID = (
    ("regularizer.weight=0.1", "regularizer.lam=4"),
    ("regularizer.weight=1.0", "regularizer.lam=4"),
    ("regularizer.weight=1.0", "regularizer.lam=16"),
)
_JD_GRID = (
    ("regularizer.penalty=hinge", "regularizer.weight=0.1"),
    ("regularizer.penalty=square", "regularizer.weight=0.01"),
    ("regularizer.penalty=signed", "regularizer.weight=0.01"),
)
# The square penalty, which most searches over _JD_GRID chose, with its weight searched; weight 0.1
# won both follow-up runs made after those searches (see docs/results.md).
_JD_SQUARE_GRID = tuple(("regularizer.penalty=square", f"regularizer.weight={w}") for w in ("0.01", "0.1", "1.0"))
# The full method (dueling branches and interpolated points, as published) at the square penalty:
# its weight 0.01 is the JD-on-ProxyAnchor search's Omniglot choice, 0.1 the glyph one.
_JD_FULL_GRID = (
    ("regularizer.penalty_weight=0.01", "regularizer.reward_weight=0.01"),
    ("regularizer.penalty_weight=0.01", "regularizer.reward_weight=0.1"),
    ("regularizer.penalty_weight=0.1", "regularizer.reward_weight=0.1"),
)
_JD_FULL_CURVES = tuple(("*_JacobianDeterminantLoss.csv", c) for c in ("logdet_mean", "branch2_logdet_mean"))
_DVML_GRID = (
    ("trainer.phase2_start_epoch=2",),
    ("trainer.phase2_start_epoch=5",),
    ("trainer.phase2_start_epoch=5", "trainer.num_samples=5"),
)
STUDIES: dict[str, Study] = {
    "skewed_mean_proxy_anchor": Study(
        _PA,
        ("regularizer=skewed_mean",),
        _SM_GRID,
        {},
        "SkewedMeanRegularizer on ProxyAnchor's proxies",
        _SM_CURVES,
    ),
    "skewed_mean_normalized_softmax": Study(
        _NS,
        ("regularizer=skewed_mean",),
        _SM_GRID,
        {},
        "SkewedMeanRegularizer on NormalizedSoftmax's class weights",
        _SM_CURVES,
    ),
    "jacobian_determinant_proxy_anchor": Study(
        (*_PA, "embedder=flow"),
        ("regularizer=jacobian_determinant",),
        _JD_GRID,
        {"linear": (*_PA, "embedder=linear")},
        "JacobianDeterminantRegularizer on a flow embedder with ProxyAnchor",
        _JD_CURVES,
    ),
    "jacobian_determinant_multi_similarity": Study(
        (*_MS, "embedder=flow"),
        ("regularizer=jacobian_determinant",),
        _JD_GRID,
        {"linear": (*_MS, "embedder=linear")},
        "JacobianDeterminantRegularizer on a flow embedder with MultiSimilarity + miner",
        _JD_CURVES,
    ),
    "jacobian_determinant_square_proxy_anchor": Study(
        (*_PA, "embedder=flow"),
        ("regularizer=jacobian_determinant",),
        _JD_SQUARE_GRID,
        {},
        "JacobianDeterminantRegularizer, square penalty, weight searched, on a flow embedder with ProxyAnchor",
        _JD_CURVES,
    ),
    "jacobian_determinant_square_multi_similarity": Study(
        (*_MS, "embedder=flow"),
        ("regularizer=jacobian_determinant",),
        _JD_SQUARE_GRID,
        {},
        "JacobianDeterminantRegularizer, square penalty, weight searched, on a flow embedder with "
        "MultiSimilarity + miner",
        _JD_CURVES,
    ),
    "jacobian_determinant_full_proxy_anchor": Study(
        (*_PA, "embedder=flow"),
        ("embedder=dueling_flow", "regularizer=jacobian_determinant_loss"),
        _JD_FULL_GRID,
        {"linear": (*_PA, "embedder=linear")},
        "JacobianDeterminantLoss (dueling flows, interpolated points) against a bare flow with ProxyAnchor",
        _JD_FULL_CURVES,
    ),
    "dvml_triplet": Study(
        _TRIPLET,
        ("embedder=dvml", "trainer=dvml"),
        _DVML_GRID,
        {},
        "DVML on Triplet + semihard miner",
        _DVML_CURVES,
    ),
    "dvml_multi_similarity": Study(
        _MS,
        ("embedder=dvml", "trainer=dvml"),
        _DVML_GRID,
        {},
        "DVML on MultiSimilarity + miner",
        _DVML_CURVES,
    ),
}

# name: (dataset and schedule overrides for search and final runs, search seeds, final seeds)
SIZES = {
    "tiny": (
        (
            "dataset=glyphs",
            "dataset.size=16",
            "dataset.options.num_classes=16",
            "dataset.options.per_class=6",
            "epochs=1",
            "batch_size=24",
            "cv_folds=2",
        ),
        1,
        2,
    ),
    "full": (("epochs=10", "cv_folds=4", "batch_size=64"), 1, 5),
}


def run_named(name: str, overrides: list[str], out: Path, cache: Path | None) -> Path:
    args = [f"output_dir={out}", f"experiment={name}", *overrides]
    if cache is not None:
        args.append(f"dataset.cache_dir={cache}")
    return run_experiment(load_spec(args), command=shlex.join(["pml-bench", "run", *args]))


def val_score(exp_dir: Path) -> float:
    records = ExperimentFolder(exp_dir).records()
    return float(np.mean([r["metrics"][PRIMARY] for r in records if r["split"] == "val"]))


def run_all(
    runs: list[tuple[str, list[str]]],
    out: Path,
    cache: Path | None,
    jobs: int = 1,
    worker: Callable[[str, list[str], Path, Path | None], Any] = run_named,
) -> list[Any]:
    """``worker`` (by default :func:`run_named`) for each ``(name, overrides)``, up to ``jobs`` at
    once in their own processes; its results (the experiment folders) in the order given. A
    ``worker`` other than the default must be importable by name, for the processes to find it."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(runs) <= 1:
        return [worker(name, overrides, out, cache) for name, overrides in runs]
    context = multiprocessing.get_context("spawn")  # no forked copies of torch's thread pools
    with ProcessPoolExecutor(max_workers=min(jobs, len(runs)), mp_context=context) as pool:
        names, overrides = zip(*runs)
        return list(pool.map(worker, names, overrides, repeat(out), repeat(cache)))


def search_runs(
    tag: str, fixed: list[str], grid: tuple[tuple[str, ...], ...], seeds: int
) -> list[tuple[str, list[str]]]:
    """The validation-only runs of ``fixed + point``, one for each grid point."""
    runs = []
    for point in grid:
        slug = "_".join(o.split("=", 1)[0].rsplit(".", 1)[-1] + o.split("=", 1)[1] for o in point)
        runs.append((f"{tag}-search-{slug}", [*fixed, *point, "test=false", f"seeds={seeds}", "seed_offset=100"]))
    return runs


def best_point(
    grid: tuple[tuple[str, ...], ...], dirs: list[Path]
) -> tuple[tuple[str, ...], list[tuple[str, Path, float]]]:
    """The grid point whose run scored best on validation, and every point's (label, folder, score)."""
    rows = [(" ".join(point), exp, val_score(exp)) for point, exp in zip(grid, dirs)]
    best = max(range(len(grid)), key=lambda k: rows[k][2])
    return grid[best], rows


def run_study(
    study_name: str,
    dataset: list[str],
    size: str,
    embedding_size: int,
    out: Path,
    docs: Path,
    cache: Path | None,
    command: str,
    jobs: int = 1,
) -> str:
    study = STUDIES[study_name]
    schedule, search_seeds, final_seeds = SIZES[size]
    data_name = dataset_name([*schedule, *dataset])
    tag = f"{study_name}-{data_name}-d{embedding_size}"
    common = [*schedule, *dataset, f"embedding_size={embedding_size}"]
    base = [*common, *study.base]
    lr_grid = tuple((p,) for p in LR_GRID)

    # The learning-rate searches (baseline and comparators) are independent; the method's search
    # needs the baseline's choice.
    lr_searches = {"baseline": base} | {name: [*common, *fixed] for name, fixed in study.extra.items()}
    runs = {role: search_runs(f"{tag}-{role}", fixed, lr_grid, search_seeds) for role, fixed in lr_searches.items()}
    dirs = iter(run_all([r for role_runs in runs.values() for r in role_runs], out, cache, jobs))
    points, searches, finals = {}, {}, {}
    for role, fixed in lr_searches.items():
        points[role], searches[role] = best_point(lr_grid, [next(dirs) for _ in lr_grid])
        finals[role] = [*fixed, *points[role]]
    method_fixed = [*finals["baseline"], *study.method]
    method_dirs = run_all(search_runs(f"{tag}-method", method_fixed, study.method_grid, search_seeds), out, cache, jobs)
    points["method"], searches["method"] = best_point(study.method_grid, method_dirs)
    finals["method"] = [*method_fixed, *points["method"]]
    roles = ("baseline", "method", *study.extra)
    finals, searches = {r: finals[r] for r in roles}, {r: searches[r] for r in roles}

    dirs = run_all([(f"{tag}-{role}", [*o, f"seeds={final_seeds}"]) for role, o in finals.items()], out, cache, jobs)
    report_dir = docs / tag
    text = write_report(
        dirs,
        report_dir,
        baseline=f"{tag}-baseline",
        title=f"{study.description} ({data_name}, {embedding_size}-d)",
        command=command,
    )
    lines = [
        "## Hyperparameter search (validation only)",
        "",
        f"Best validation MAP@R averaged over the folds, {search_seeds} seed(s) per configuration; "
        f"the test classes are not used. Budget: {len(LR_GRID)} configurations for the baseline "
        f"(learning rate), {len(study.method_grid)} for the method (at the baseline's learning rate)"
        + (f", {len(LR_GRID)} for each extra comparator." if study.extra else "."),
        "",
        "| side | configuration | validation MAP@R | chosen |",
        "|---|---|---|---|",
    ]
    for role, rows in searches.items():
        chosen = " ".join(points[role])
        for label, _, score in rows:
            lines.append(f"| {role} | `{label}` | {score:.4f} | {'yes' if label == chosen else ''} |")
    val_records = [r for d in dirs for r in ExperimentFolder(d).records()]
    val_rows = summarize(val_records, baseline=f"{tag}-baseline", split="val")
    lines += ["", "Validation MAP@R of the final runs:", "", markdown_table(val_rows), ""]
    lines += [
        "## Over training (final runs)",
        "",
        "Mean over the training runs (seeds and folds) of each experiment; an experiment that does "
        "not log a column has no line in its plot.",
        "",
    ]
    for log_file, column in (VAL_CURVE, *study.curves):
        png = f"curve_{column}.png"
        xlabel = "epoch" if (log_file, column) == VAL_CURVE else "iteration"
        plot_training_curves(dirs, report_dir / png, column, log_file, xlabel)
        lines += [f"![{column} over training]({png})", ""]
    text += "\n" + "\n".join(lines)
    (report_dir / "report.md").write_text(text)
    return text


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset, schedule and output options the experiment scripts share."""
    parser.add_argument("--dataset", default="glyphs", help="glyphs (offline default) or omniglot, ...")
    parser.add_argument(
        "--root", help="dataset root (omniglot: the folder with the official zips or images_background.npz)"
    )
    parser.add_argument("--embedding-size", type=int, default=32)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", type=Path, default=Path("runs/evidence"), help="experiment folders")
    parser.add_argument("--docs", type=Path, default=Path("docs/results"), help="where reports go")
    parser.add_argument("--cache", type=Path, help="dataset cache folder (default: the config's)")
    parser.add_argument(
        "--per-class",
        type=int,
        metavar="N",
        help="glyphs only: N instances per class (the data set's default is 20; the main command uses 10)",
    )


def dataset_name(overrides: list[str]) -> str:
    """The dataset an override list selects (its first ``dataset=``, else the default, glyphs), with
    ``-n<N>`` when it sets ``dataset.options.per_class=N`` (the last such override wins)."""
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("dataset=")), "glyphs")
    per_class = [o.split("=", 1)[1] for o in overrides if o.startswith("dataset.options.per_class=")]
    return f"{name}-n{per_class[-1]}" if per_class else name


def dataset_overrides(args: argparse.Namespace) -> list[str]:
    """Runner overrides for the dataset options of :func:`add_run_arguments`."""
    out = [f"dataset={args.dataset}"] + ([f"dataset.root={args.root}"] if args.root else [])
    if args.per_class is not None:
        if args.dataset != "glyphs":
            raise SystemExit(f"--per-class applies to --dataset glyphs only, not {args.dataset!r}")
        if args.per_class < 2:
            raise SystemExit(f"--per-class must be at least 2 (a class needs a positive pair), got {args.per_class}")
        out.append(f"dataset.options.per_class={args.per_class}")
    return out


def script_command(module: str, argv: list[str] | None) -> str:
    """The command line that ran the script ``module`` (``python -m experiments.<name>``), as the
    reports quote it."""
    return shlex.join(["python", "-m", module, *(argv if argv is not None else sys.argv[1:])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The evidence study: search on validation, test once, report.")
    parser.add_argument("study", nargs="?", choices=sorted(STUDIES))
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run up to N independent experiments at once, each in its own process (default 1)",
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.list or not args.study:
        width = max(map(len, STUDIES))
        for name, study in STUDIES.items():
            print(f"{name:{width}s}  {study.description}")
        return 0
    command = script_command("experiments.evidence", argv)
    print(
        run_study(
            args.study,
            dataset_overrides(args),
            args.size,
            args.embedding_size,
            args.out,
            args.docs,
            args.cache,
            command,
            args.jobs,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
