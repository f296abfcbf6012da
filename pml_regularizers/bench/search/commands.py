"""``pml-bench search`` and ``pml-bench study``: their options, and what they run.

``pml-bench search [OVERRIDES] [--space KEY=RANGE ...] [--trials N] ...`` searches one config
(:func:`~pml_regularizers.bench.search.search.run_search`) into ``<output_dir>/search/<name>`` and
writes its report to ``report/`` there. ``pml-bench study NAME [OVERRIDES]`` runs a study file
(:mod:`~pml_regularizers.bench.search.study`); ``pml-bench study --list`` lists the published ones.
The budget options of both default to the config's values (``epochs``, ``patience``, ``seeds``;
``cv_folds`` when it is 2 or more, else 4) for a search, and to the study file's for a study.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["add_parsers", "search_command", "study_command"]

DEFAULT_TRIALS = 20  # a few times the number of searched keys for the config groups' declared ranges
DEFAULT_FOLDS = 4  # the Reality Check's class-disjoint folds


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``search`` and ``study`` commands to ``pml-bench``'s subcommands."""
    search = sub.add_parser(
        "search",
        help="search hyperparameters on validation folds (Optuna), then train and test the chosen setting",
    )
    search.add_argument("overrides", nargs="*", help="config overrides, key=value (as for pml-bench run)")
    search.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=RANGE",
        help="a searched key and its range in Hydra's sweep grammar, e.g. "
        "'optimizer.lr=tag(log, interval(1e-5, 1e-1))' (repeatable; added to the ranges the config's "
        "groups declare; KEY=null drops one)",
    )
    search.add_argument("--name", help="the search's name and folder (default: the config's experiment name)")
    _add_budget_options(search)
    _add_run_options(search)
    study = sub.add_parser(
        "study", help="run a study file: search each of its configs under one budget, test, report (resumes)"
    )
    study.add_argument("study", nargs="?", help="a published study's name (--list) or a study .yaml file")
    study.add_argument("overrides", nargs="*", help="overrides for every row, e.g. dataset=folder dataset.root=...")
    study.add_argument("--list", action="store_true", help="list the published studies and exit")
    study.add_argument("--rows", help="run only these rows (comma-separated), without writing the report")
    _add_budget_options(study)
    _add_run_options(study)


def _add_budget_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, help=f"finished trials per search (search: default {DEFAULT_TRIALS})")
    parser.add_argument("--epochs", type=int, help="epoch cap of every trial and final run")
    parser.add_argument("--folds", type=int, help="class-disjoint validation folds (>= 2)")
    parser.add_argument("--patience", type=int, help="early stopping after this many epochs without gain")
    parser.add_argument("--seeds", type=int, help="seeds of the final runs, each tested once")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", help="an Optuna storage URL shared by workers on several machines (default: SQLite in the folder)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes running trials on this machine (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed (default 0)")
    parser.add_argument("--no-prune", action="store_true", help="train every trial to its end (no median pruner)")
    parser.add_argument(
        "--heartbeat", type=int, default=60, help="seconds between a trial's heartbeats; silent 2x as long = dead"
    )
    parser.add_argument("--report", type=Path, help="the report's folder (default: report/ in the search's folder)")
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="run trials until the budget is spent, no final runs nor report (workers on other machines)",
    )


def search_command(args: argparse.Namespace, argv: Sequence[str]) -> Path | None:
    """Run ``pml-bench search``; the report's folder (None with ``--search-only``)."""
    from ..spec.compose import load_spec
    from .budget import SearchBudget
    from .report import write_search_report
    from .search import run_search, search_folder

    spec = load_spec(args.overrides)
    protocol = spec.protocol
    folds = protocol.cv_folds if protocol.cv_folds >= 2 else DEFAULT_FOLDS
    budget = SearchBudget(
        trials=DEFAULT_TRIALS if args.trials is None else args.trials,
        epochs=protocol.epochs if args.epochs is None else args.epochs,
        cv_folds=folds if args.folds is None else args.folds,
        patience=protocol.patience if args.patience is None else args.patience,
        final_seeds=protocol.seeds if args.seeds is None else args.seeds,
    )
    space = dict(_space_entry(entry) for entry in args.space)
    name = args.name or spec.experiment
    command = shlex.join(["pml-bench", "search", *argv])
    result = run_search(
        name,
        args.overrides,
        space,
        budget,
        **_run_options(args),
        command=command,
    )
    if args.search_only:
        finished = sum(t.counted for t in result.trials)
        print(
            f"search {name}: {finished} of {budget.trials} trials finished; the final runs are left to a run "
            "without --search-only"
        )
        return None
    out = args.report or search_folder(spec.output_dir, name) / "report"
    write_search_report([result], out, f"Search: {name}", command=command)
    return out


def study_command(args: argparse.Namespace, argv: Sequence[str]) -> list[Path]:
    """Run ``pml-bench study``; the report folders (none with ``--list`` or ``--rows``)."""
    from .study import list_studies, load_study, run_study

    if args.list:
        print("\n".join(f"{name}: {load_study(name).title}" for name in list_studies()))
        return []
    if args.study is None:
        raise ConfigError("name a study (pml-bench study --list shows the published ones) or a study .yaml file")
    study = load_study(args.study)
    changes = {
        field: value
        for field, value in (
            ("trials", args.trials),
            ("epochs", args.epochs),
            ("cv_folds", args.folds),
            ("patience", args.patience),
            ("final_seeds", args.seeds),
        )
        if value is not None
    }
    if changes:
        study = study.with_budget(**changes)
    rows = [r for r in args.rows.split(",") if r] if args.rows else None
    return run_study(
        study,
        args.overrides,
        rows=rows,
        report_dir=args.report,
        **_run_options(args),
        command=shlex.join(["pml-bench", "study", *argv]),
    )


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments that ``search`` and ``study`` pass on alike."""
    return {
        "storage": args.storage,
        "workers": args.workers,
        "seed": args.seed,
        "prune": not args.no_prune,
        "heartbeat": args.heartbeat,
        "search_only": args.search_only,
    }


def _space_entry(entry: str) -> tuple[str, str | None]:
    key, sep, expression = entry.partition("=")
    if not sep or not key or not expression:
        raise ConfigError(f"--space takes KEY=RANGE, got {entry!r}")
    return key, None if expression == "null" else expression
