"""``pml-bench`` / ``python -m pml_regularizers.bench``: run, evaluate, compare and report.

Examples
--------
``pml-bench run loss=proxy_anchor regularizer=skewed_mean regularizer.lam=8 seeds=5``
``pml-bench evaluate regularizer=skewed_mean``   (re-test saved models, no training)
``pml-bench compare``                           (the default comparison on the offline dataset)
``pml-bench report runs/glyphs-proxy_anchor-linear runs/glyphs-proxy_anchor-skewed_mean-linear``
``torchrun --nproc_per_node=2 -m pml_regularizers.bench run batch_size=64``   (data-parallel)
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .extras import bench_extra_message, missing_bench_modules

# The default comparison: each of the plugin's methods against its base loss, on the same seeds and
# data. Each group is reported on its own; its first entry is the baseline the others are paired
# with. An experiment shared by two groups is run once. The methods run at their config defaults,
# which are the evidence study's validation choices (docs/results). The learning rate stays at the
# default 0.001: the Omniglot search (10 epochs) chose 0.003 for ProxyAnchor, but on these glyphs
# (5 epochs) validation preferred 0.001 (2 folds, 1 seed: MAP@R 0.241 against 0.185 at 0.003).
_PROXY = ("loss=proxy_anchor",)
_TRIPLET = ("loss=triplet", "miner=triplet_margin", "sampler=m_per_class")
_MS = ("loss=multi_similarity", "miner=multi_similarity", "sampler=m_per_class")
_DVML = ("embedder=dvml", "trainer=dvml")
DEFAULT_COMPARISON: dict[str, tuple[tuple[str, ...], ...]] = {
    "skewed_mean": (_PROXY, (*_PROXY, "regularizer=skewed_mean")),
    "jacobian_determinant": (
        (*_PROXY, "embedder=flow"),
        (*_PROXY, "embedder=flow", "regularizer=jacobian_determinant"),
        _PROXY,
    ),
    "dvml_triplet": (_TRIPLET, (*_TRIPLET, *_DVML)),
    "dvml_multi_similarity": (_MS, (*_MS, *_DVML)),
}
# Settings of the default comparison that differ from the config defaults (overridable): its own
# output folder, and 10 instances per glyph class so that it fits in 15 minutes on 2 CPU cores.
COMPARE_DEFAULTS: tuple[str, ...] = ("output_dir=runs/compare", "dataset.options.per_class=10")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pml-bench`` with ``argv`` (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a user error (a config, path, data set or experiment
        folder that does not fit: :class:`~pml_regularizers.bench.config.UserError`), whose
        message goes to stderr as one ``pml-bench: error:`` line. Also 2, with such a line, when
        the bench extra is not installed.
    """
    parser = argparse.ArgumentParser(prog="pml-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("run", "train and test one experiment (resumes, skips finished work)"),
        ("evaluate", "re-test the saved models of one experiment without training"),
        ("compare", "run the default comparison and print its table"),
    ]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("overrides", nargs="*", help="config overrides, key=value")
    rep = sub.add_parser("report", help="tables and plots from experiment folders")
    rep.add_argument("experiments", nargs="+", type=Path)
    rep.add_argument("--baseline", help="experiment name to pair the others with")
    rep.add_argument("--out", type=Path, help="output folder (default: beside the first experiment)")
    rep.add_argument("--title", default="Benchmark report", help="the report's heading")
    rep.add_argument(
        "--split",
        default="test",
        choices=("test", "val"),
        help="test: held-out classes; val: best validation MAP@R over the folds (for tuning)",
    )
    args = parser.parse_args(argv)
    missing = missing_bench_modules()
    if missing:
        print(f"pml-bench: error: {bench_extra_message(missing)}", file=sys.stderr)
        return 2
    from .config import UserError, load_config  # needs the bench extra

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "report":
            command = _command("report", [str(a) for a in argv or sys.argv[1:]][1:])
            _print_summaries([_report(args.experiments, args.baseline, args.out, args.split, args.title, command)])
        elif args.command == "compare":
            _compare(args.overrides)
        else:
            from .runner import run_experiment

            cfg = load_config(args.overrides)
            exp_dir = run_experiment(
                cfg, evaluate_only=args.command == "evaluate", command=_command("run", args.overrides)
            )
            if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports
                _print_summaries([_report([exp_dir], None, exp_dir, "test" if cfg.test else "val")])
    except UserError as err:
        print(f"pml-bench: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    return 0


def _one_line(message: str) -> str:
    """``message`` with its lines (Hydra's errors have several) joined by spaces."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _compare(overrides: Sequence[str]) -> None:
    from .config import experiment_name, load_config
    from .runner import run_experiment

    reports = []
    for group, entries in DEFAULT_COMPARISON.items():
        dirs, baseline = [], None
        for entry in entries:
            args = [*COMPARE_DEFAULTS, *entry, *overrides]
            cfg = load_config(args)
            dirs.append(run_experiment(cfg, command=_command("run", args)))
            baseline = baseline or experiment_name(cfg)
        out = dirs[0].parent / "comparison" / group
        reports.append(
            _report(dirs, baseline, out, title=f"Default comparison: {group}", command=_command("compare", overrides))
        )
    _print_summaries(reports)


def _command(sub: str, args: Sequence[str]) -> str:
    return shlex.join(["pml-bench", sub, *args])


def _report(
    exp_dirs: Sequence[Path],
    baseline: str | None,
    out: Path | None,
    split: str = "test",
    title: str = "Benchmark report",
    command: str | None = None,
) -> Path:
    """Write the report of ``exp_dirs`` into ``out`` (by default ``report/`` beside the first
    experiment) and return that folder."""
    from .report import write_report

    out = out or exp_dirs[0].parent / "report"
    _check_report_inputs(exp_dirs, baseline, out, split)
    write_report([str(d) for d in exp_dirs], str(out), baseline=baseline, split=split, title=title, command=command)
    return out


def _print_summaries(report_dirs: Sequence[Path]) -> None:
    """Print the terminal summary of each report (its compact table and where it is), one after
    another: the full Markdown, with its image links and wide tables, is for reading as a file."""
    from .terminal_summary import report_summary

    print("\n\n".join(report_summary(d) for d in report_dirs))


def _check_report_inputs(exp_dirs: Sequence[Path], baseline: str | None, out: Path, split: str) -> None:
    """Refuse, as a :class:`UserError`, experiment folders without valid results or with the
    same experiment, a ``--baseline`` that is not one of their experiments with ``split`` records,
    and an ``--out`` that is a file."""
    from .config import UserError
    from .experiment import ExperimentFolder

    names: dict[str, bool] = {}  # experiment -> whether it has records of the split
    for exp_dir in exp_dirs:
        try:
            results = ExperimentFolder(exp_dir).results()
        except (OSError, ValueError) as err:
            raise UserError(str(err)) from err
        if results.experiment in names:
            raise UserError(f"the experiments must differ; {results.experiment!r} is given twice")
        names[results.experiment] = any(r["split"] == split for r in results.records)
    if baseline is not None and not names.get(baseline):
        candidates = ", ".join(n for n, has_split in names.items() if has_split)
        raise UserError(
            f"--baseline must name one of the experiments with {split} records ({candidates}), got {baseline!r}"
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} is a file, not a folder")
