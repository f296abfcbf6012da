"""``pml-bench`` / ``python -m pml_regularizers.bench``: run, evaluate, search, study, report, embed
and check-data; the command-line edge, where configs are composed and checked and errors become one
``pml-bench: error:`` line.

``run`` and ``evaluate`` take Hydra's own command line (:mod:`~pml_regularizers.bench.app`):
overrides, ``--help``, ``--cfg``, ``--multirun``. The other commands take their own options.

Examples
--------
``pml-bench run loss=proxy_anchor regularizer=skewed_mean regularizer.lam=8 seeds=5``
``pml-bench run --help``                         (the config groups, their choices and the config)
``pml-bench run --cfg job --resolve regularizer=skewed_mean``   (the config and its folder, no training)
``pml-bench run -m regularizer=none,skewed_mean seeds=5``   (a sweep; jobs run in parallel processes)
``pml-bench evaluate regularizer=skewed_mean``   (re-test saved models, no training)
``pml-bench search regularizer=skewed_mean --trials 30``   (Optuna on validation folds, then test the best)
``pml-bench study compare``                     (the default comparison on the offline dataset)
``pml-bench study skewed_mean_proxy_anchor dataset=folder dataset.root=/data/mine``   (a published study)
``pml-bench report runs/glyphs-proxy_anchor-linear runs/glyphs-proxy_anchor-skewed_mean-linear``
``pml-bench run test_split=none regularizer=skewed_mean``   (train on every class: the model to deploy)
``pml-bench embed runs/glyphs-proxy_anchor-linear-all_classes --out emb.pt dataset=folder dataset.root=/data/new``
``torchrun --nproc_per_node=2 -m pml_regularizers.bench run batch_size=64``   (data-parallel)

``pml-bench check-data dataset=cub dataset.root=/data/cub`` decodes every image of a data set once
and lists every problem file (exit status 1 when there is one):
:mod:`~pml_regularizers.bench.data.check`.

``embed`` embeds every image of a data set (all classes, no split) with the models of one seed of an
experiment (``--seed S``, default the first), its folds' embeddings concatenated
(:mod:`~pml_regularizers.bench.protocol.embedding`). It takes ``dataset`` overrides only: ``dataset=NAME``
composes that data set's config, ``dataset.KEY=VALUE`` alone changes the experiment's own. The file
holds ``embeddings``, ``labels``, ``class_names``, ``experiment``, ``seed``, ``folds`` and
``embedding``; with 2 or more classes of 2 or more images the retrieval metrics are printed and
written beside it (``emb.metrics.json``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .extras import bench_extra_message, missing_bench_modules

if TYPE_CHECKING:
    from omegaconf import DictConfig


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pml-bench`` with ``argv`` (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        The exit status: 0 on success, 2 for a user error (a config, path, data set or experiment
        folder that does not fit: :class:`~pml_regularizers.bench.errors.UserError`; an image file
        that cannot be decoded, met while training or testing:
        :class:`~pml_regularizers.bench.data.ImageDecodeError`), whose message goes to stderr as
        one ``pml-bench: error:`` line. Also 2, with such a line, when the bench extra is not
        installed. ``check-data`` gives 1 when it found problem files; a ``--multirun`` sweep 2
        when one of its jobs failed.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv and argv[0] in HYDRA_COMMANDS:  # Hydra's command line, not argparse's
        command, rest = argv[0], argv[1:]
    else:
        args, extra = parser.parse_known_args(argv)
        if extra and (args.command not in ("embed", "search", "study") or any(a.startswith("-") for a in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if extra:  # overrides after an option
            args.overrides += extra
        command = args.command
    missing = missing_bench_modules()
    if missing:
        print(f"pml-bench: error: {bench_extra_message(missing)}", file=sys.stderr)
        return 2
    from .errors import UserError

    _set_up_terminal()
    if command in HYDRA_COMMANDS:
        from .app import hydra_command

        return hydra_command(command, rest, _job(command), _check_run, _report_error)
    try:
        if command == "check-data":
            return _check_data(args.overrides, args.workers, args.out)
        if command == "report":
            report_command = _command("report", [str(a) for a in argv][1:])
            _print_summaries(
                [_report(args.experiments, args.baseline, args.out, args.split, args.title, report_command)]
            )
        elif command in ("search", "study"):
            from .search.commands import search_command, study_command

            rest = [str(a) for a in argv][1:]
            if command == "search":
                report = search_command(args, rest)
                if report is not None:
                    _print_summaries([report])
            else:
                reports = study_command(args, rest)
                if reports:
                    _print_summaries(reports)
        else:
            _embed(args.experiment, args.out, args.overrides, args.seed, args.device)
    except UserError as err:
        return _report_error(err)
    return 0


HYDRA_COMMANDS = ("run", "evaluate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pml-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("run", "train and test one experiment (resumes, skips finished work); Hydra's command line: run --help"),
        ("evaluate", "re-test the saved models of one experiment without training; Hydra's command line"),
    ]:
        sub.add_parser(name, help=help_text, add_help=False)
    from .search.commands import add_parsers

    add_parsers(sub)
    chk = sub.add_parser("check-data", help="decode every image of a data set once and list every problem file")
    chk.add_argument(
        "overrides", nargs="*", help="config overrides of the dataset group: dataset=NAME dataset.root=..."
    )
    chk.add_argument("--workers", type=int, help="DataLoader workers that decode (default: the CPUs, at most 8)")
    chk.add_argument("--out", type=Path, help="also write the problems as JSON to this file")
    emb = sub.add_parser("embed", help="embed every image of a data set with an experiment's trained models")
    emb.add_argument("experiment", type=Path, help="the experiment folder (<output_dir>/<experiment>)")
    emb.add_argument("overrides", nargs="*", help="dataset overrides: dataset=NAME, dataset.KEY=VALUE")
    emb.add_argument("--out", type=Path, required=True, help="the embeddings file to write (.pt)")
    emb.add_argument("--seed", type=int, help="whose models embed (default: the experiment's first seed)")
    emb.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
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
    return parser


def _report_error(err: BaseException) -> int:
    """Print ``err`` as one ``pml-bench: error:`` line; the exit status, 2."""
    from .errors import ImageDecodeError

    if isinstance(err, ImageDecodeError):  # met by a DataLoader worker, as the file was served
        message = (
            f"{err.summary}; list every problem file with pml-bench check-data and the same dataset overrides, "
            "then replace or remove them (a run resumes from its last finished epoch)"
        )
    else:
        message = _one_line(str(err))
    print(f"pml-bench: error: {message}", file=sys.stderr)
    return 2


def _check_run(overrides: Sequence[str]) -> Path:
    """Check the config ``overrides`` compose, every key and the targets' arguments; its
    experiment folder."""
    from .spec.compose import load_spec

    return load_spec(overrides).folder


def _job(command: str) -> Callable[[DictConfig], int]:
    """The job of ``pml-bench run|evaluate`` for Hydra's application: one composed config checked,
    run (or evaluated) and reported; its exit status."""

    def job(cfg: DictConfig) -> int:
        from hydra.core.hydra_config import HydraConfig

        from .errors import ImageDecodeError, UserError
        from .protocol.runner import run_experiment
        from .spec.compose import finish_config
        from .spec.run_spec import RunSpec
        from .spec.targets import check_components

        _set_up_terminal()
        hydra = HydraConfig.get()
        overrides = list(hydra.overrides.task)
        try:
            spec = RunSpec.from_config(finish_config(cfg, hydra.runtime.choices))
            check_components(spec.models)
            exp_dir = run_experiment(spec, evaluate_only=command == "evaluate", command=_command("run", overrides))
            if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 reports
                protocol = spec.protocol
                _print_run_summary(exp_dir, tested=protocol.tests_held_out_classes, validated=protocol.validated)
        except (UserError, ImageDecodeError) as err:
            return _report_error(err)
        return 0

    return job


def _set_up_terminal() -> None:
    """What ``pml-bench`` prints: logging at WARNING, the runner's progress lines as they are, data
    warnings as one line each, and no progress bars (PML's testers draw one per embedding pass;
    the progress lines say where a run is)."""
    from .errors import DataWarning
    from .protocol.progress import LOGGER as PROGRESS

    os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm when a bar is made, here and in workers
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not any(isinstance(h, _StdoutHandler) for h in PROGRESS.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        PROGRESS.addHandler(handler)
        PROGRESS.setLevel(logging.INFO)
        PROGRESS.propagate = False
    _show_data_warnings_as_lines(DataWarning)


class _StdoutHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stdout`` is when a record comes (a handler made with
    ``sys.stdout`` would keep writing to the stream of that moment, closed once it is replaced)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stdout``."""


def _show_data_warnings_as_lines(category: type[Warning]) -> None:
    """Print warnings of ``category`` (which name their file) as ``pml-bench: warning:`` lines,
    without the source line Python's format adds; other warnings keep Python's format."""
    default = warnings.formatwarning
    if getattr(default, "pml_bench", False):  # installed by an earlier main() in this process
        return

    def format_warning(message, kind, filename, lineno, line=None):  # type: ignore[no-untyped-def]
        if issubclass(kind, category):
            return f"pml-bench: warning: {_one_line(str(message))}\n"
        return default(message, kind, filename, lineno, line)

    format_warning.pml_bench = True  # type: ignore[attr-defined]
    warnings.formatwarning = format_warning


def _check_data(overrides: Sequence[str], workers: int | None, out: Path | None) -> int:
    """Run :func:`~pml_regularizers.bench.data.check.check_data` on the data set ``overrides``
    compose; print what it found (and write it to ``out`` as JSON); 1 when there are problems."""
    from .data.check import check_data
    from .errors import UserError
    from .results.io import check_writable, write_json
    from .spec.compose import load_spec

    spec = load_spec(overrides)
    if out is not None:
        try:
            check_writable(out)
        except ValueError as err:
            raise UserError(f"--out: {err}") from None
    found = check_data(spec.data, workers)
    what = "decoded" if found.decoded else "loaded"
    lines = [
        f"{what} {found.num_images} images of {found.num_classes} classes (dataset={found.dataset}"
        f"{f', root {found.root}' if found.root else ''}) in {found.seconds:.1f} s: "
        + (f"{len(found.problems)} problem files" if found.problems else "no problem files")
    ]
    width = max((len(p.kind) for p in found.problems), default=0)
    lines += [f"  {p.kind:<{width}}  {p.file}: {p.detail}" for p in found.problems]
    if out is not None:
        write_json(out, found.to_json())
        lines.append(f"written to {out}")
    print("\n".join(lines))
    return 1 if found.problems else 0


def _one_line(message: str) -> str:
    """``message`` with its lines (Hydra's errors have several) joined by spaces."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _print_run_summary(exp_dir: Path, tested: bool, validated: bool) -> None:
    """Print the summary of the report of one experiment on its test split, or on validation
    without one; without either (``test_split=none``, no folds), what it trained
    (:func:`_trained_summary`)."""
    if tested or validated:
        _print_summaries([_report([exp_dir], None, exp_dir, "test" if tested else "val")])
    else:
        print(_trained_summary(exp_dir))


def _trained_summary(exp_dir: Path) -> str:
    """What a run that trained on every class without folds left: no metrics, the checkpoints, and
    how to embed with them."""
    from .protocol.trained import experiment_data, experiment_split
    from .results.folder import ExperimentFolder

    folder = ExperimentFolder(exp_dir)
    train_classes, _, _ = experiment_split(folder, experiment_data(folder))
    checkpoints = [folder.tested_checkpoint(fold) for fold in folder.folds()]
    return "\n".join(
        [
            f"{folder.name()}: trained on all {len(train_classes)} classes of dataset={folder.spec().data.choice}; "
            "no test split (test_split=none), so no metrics",
            "checkpoints (the last epoch's models, one per seed):",
            *(f"  {path}" for path in checkpoints),
            f"embed a data set with them: pml-bench embed {exp_dir} --out FILE [dataset=NAME dataset.KEY=VALUE ...]",
        ]
    )


def _embed(exp_dir: Path, out: Path, overrides: Sequence[str], seed: int | None, device: str) -> None:
    from .protocol.embedding import embed_data_set
    from .results.metric_names import METRIC_LABELS
    from .results.stats import metric_order

    done = embed_data_set(exp_dir, out, overrides, seed, device)
    what = "the folds' embeddings concatenated" if done.embedding == "concatenated" else "one fold"
    lines = [
        f"embedded {done.num_images} images of {done.num_classes} classes (dataset={done.dataset}) with the "
        f"models of seed {done.seed} of {done.experiment} ({what}): {done.out}"
    ]
    if done.metrics is None:
        lines.append("no retrieval metrics: they need at least 2 classes with 2 or more images")
    else:
        width = max(len(METRIC_LABELS.get(m, m)) for m in done.metrics)
        lines += [
            f"  {METRIC_LABELS.get(m, m):<{width}}  {done.metrics[m]:.4f}" for m in metric_order(list(done.metrics))
        ]
        lines.append(f"metrics: {done.metrics_file}")
    print("\n".join(lines))


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
    from .results.report import write_report

    out = out or exp_dirs[0].parent / "report"
    _check_report_inputs(exp_dirs, baseline, out, split)
    write_report([str(d) for d in exp_dirs], str(out), baseline=baseline, split=split, title=title, command=command)
    return out


def _print_summaries(report_dirs: Sequence[Path]) -> None:
    """Print the terminal summary of each report (its compact table and where it is), one after
    another: the full Markdown, with its image links and wide tables, is for reading as a file."""
    from .results.terminal_summary import report_summary

    print("\n\n".join(report_summary(d) for d in report_dirs))


def _check_report_inputs(exp_dirs: Sequence[Path], baseline: str | None, out: Path, split: str) -> None:
    """Refuse, as a :class:`UserError`, experiment folders without valid results or with the
    same experiment, a ``--baseline`` that is not one of their experiments with ``split`` records,
    and an ``--out`` that is a file."""
    from .errors import UserError
    from .results.folder import ExperimentFolder

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
