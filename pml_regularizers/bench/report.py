"""Tables and plots from benchmark experiment folders.

An experiment folder holds ``results.json`` (``{"experiment": name, "config": {...},
"records": [{"seed", "split", "embedding", "metrics": {...}}, ...]}``) and, per seed,
``seed_<s>/logs/loss_histories.csv`` or, with cross-validation,
``seed_<s>/fold_<f>/logs/loss_histories.csv`` (written by record-keeper) and optionally
``seed_<s>/test_embeddings.pt`` (``{"embeddings": Tensor, "labels": Tensor}``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from .metrics import METRIC_LABELS

__all__ = [
    "SummaryRow",
    "load_experiment",
    "load_records",
    "load_loss_history",
    "loss_history_files",
    "mean_loss_curve",
    "validation_curve_table",
    "t_interval",
    "summarize",
    "markdown_table",
    "read_report_table",
    "experiment_command",
    "provenance_lines",
    "device_lines",
    "read_report_command",
    "plot_metric_comparison",
    "plot_training_curves",
    "plot_embedding_map",
    "write_report",
]

PathLike = str | os.PathLike
RECORD_KEYS = ("seed", "split", "embedding", "metrics")
ITERATION_HEADERS = ("~iteration~", "iteration")
_MADE_BY = "Made by:"
SEED_DIR = re.compile(r"^seed_(\d+)$")
# What PML's tester logs after each epoch of a run with validation: one CSV per tester level.
VAL_LOG = "accuracies_*_VAL_vs_self.csv"
VAL_MAP_AT_R = "mean_average_precision_at_r_level0"


@dataclass
class SummaryRow:
    """Mean and 95% interval of one metric for one (experiment, split, embedding) over seeds.

    Attributes
    ----------
    experiment, split, embedding, metric : str
        What the row summarizes.
    mean, half_width : float
        Mean over seeds and the half-width of its Student-t interval (nan for a single seed).
    n : int
        Number of seeds.
    diff_mean, diff_half_width : float or None
        Mean and interval half-width of the per-seed difference ``experiment - baseline`` over the
        seeds both have; ``None`` for the baseline itself, without a baseline, or with no shared
        seed.
    n_pairs : int
        Number of shared seeds behind the difference (0 when there is none).
    baseline : str or None
        The experiment the difference is taken against.
    """

    experiment: str
    split: str
    embedding: str
    metric: str
    mean: float
    half_width: float
    n: int
    diff_mean: float | None = None
    diff_half_width: float | None = None
    n_pairs: int = 0
    baseline: str | None = None


def load_records(exp_dir: PathLike) -> list[dict]:
    """The records of one experiment folder (the second item of :func:`load_experiment`, which
    says what they hold and what it raises)."""
    return load_experiment(exp_dir)[1]


def experiment_command(exp_dir: PathLike) -> str | None:
    """The command stored in ``exp_dir/results.json`` (the ``pml-bench run`` that made it), if any."""
    return _read_results(exp_dir).get("command")


def provenance_lines(command: str | None, experiment_commands: Sequence[str]) -> list[str]:
    """Markdown lines naming the command that made a report and the commands that ran its
    experiments; empty where there is neither.

    Parameters
    ----------
    command : str or None
        The command that made the report.
    experiment_commands : sequence of str
        The commands that ran its experiments (see :func:`experiment_command`), in order.
    """
    lines = []
    if command:
        lines += [_MADE_BY, "", "```bash", command, "```", ""]
    if experiment_commands:
        lines += ["Its experiments were run by:", "", "```bash", *experiment_commands, "```", ""]
    return lines


def device_lines(devices: Sequence[str | None]) -> list[str]:
    """A markdown line saying which devices ran a report's experiments (``None``: not recorded, as
    in results written before the runner recorded it); empty when none is recorded."""
    if all(d is None for d in devices):
        return []
    counts = Counter(d or "not recorded" for d in devices)
    parts = [f"{d} ({n} experiment{'s' if n > 1 else ''})" for d, n in counts.items()]
    return [f"Run on: {', '.join(parts)}.", ""]


def read_report_command(text: str) -> str | None:
    """The command that made a report, read back from the lines :func:`provenance_lines` wrote in
    its ``text``; ``None`` where it names none."""
    lines = text.splitlines()
    if _MADE_BY not in lines:
        return None
    block = lines[lines.index(_MADE_BY) + 1:]
    if "```bash" not in block:
        return None
    return next((line for line in block[block.index("```bash") + 1:] if line.strip()), None)


def load_experiment(exp_dir: PathLike) -> tuple[str, list[dict]]:
    """Read the experiment name and the records of one experiment folder.

    Parameters
    ----------
    exp_dir : path
        Folder holding ``results.json``.

    Returns
    -------
    tuple of str and list of dict
        The experiment's name, and its records, each (``seed``, ``split``, ``embedding``,
        ``metrics``) with ``"experiment"`` added.

    Raises
    ------
    FileNotFoundError
        When ``results.json`` is missing.
    ValueError
        When it is not valid JSON or lacks the expected structure; the message names the file.
    """
    data = _read_results(exp_dir)
    return data["experiment"], data["records_with_name"]


def _read_results(exp_dir: PathLike) -> dict:
    """``exp_dir/results.json``, validated, with ``records_with_name`` added."""
    path = Path(exp_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in experiment folder {exp_dir}: expected {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("experiment"), str):
        raise ValueError(f"{path} must be a JSON object with a string 'experiment'")
    records = data.get("records")
    if not isinstance(records, list):
        raise ValueError(f"{path} must have a list 'records'")
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or any(key not in record for key in RECORD_KEYS):
            raise ValueError(f"{path}: record {i} must be an object with keys {list(RECORD_KEYS)}")
        if not isinstance(record["metrics"], dict):
            raise ValueError(f"{path}: record {i} has 'metrics' that is not an object")
        out.append({**record, "experiment": data["experiment"]})
    command = data.get("command")
    if command is not None and not isinstance(command, str):
        raise ValueError(f"{path}: 'command' must be a string or null")
    return {**data, "records_with_name": out}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and Student-t confidence-interval half-width of ``values``.

    Parameters
    ----------
    values : sequence of float
        At least one value.
    confidence : float
        Two-sided confidence level in (0, 1).

    Returns
    -------
    (float, float)
        The mean and ``t_{(1+confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard
        deviation; the half-width is nan when ``n == 1``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("values must hold at least one value, got an empty sequence")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan
    sem = x.std(ddof=1) / math.sqrt(x.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2.0, df=x.size - 1) * sem)


def _metric_order(names: Sequence[str]) -> list[str]:
    known = [m for m in METRIC_LABELS if m in names]
    return known + [m for m in dict.fromkeys(names) if m not in METRIC_LABELS]


def _values_by_seed(records: Sequence[dict], split: str) -> dict[tuple, dict]:
    """Map (experiment, embedding, metric) to {seed: value}, in first-seen order."""
    table: dict[tuple, dict] = {}
    for record in records:
        if record["split"] != split:
            continue
        for metric, value in record["metrics"].items():
            if value is None:
                continue
            key = (record["experiment"], record["embedding"], metric)
            per_seed = table.setdefault(key, {})
            if record["seed"] in per_seed:
                raise ValueError(
                    f"records hold two values for experiment {key[0]!r}, embedding {key[1]!r}, "
                    f"metric {metric!r}, seed {record['seed']!r}, split {split!r}"
                )
            per_seed[record["seed"]] = float(value)
    return table


def summarize(
    records: Sequence[dict], baseline: str | None = None, split: str = "test"
) -> list[SummaryRow]:
    """Summarize records over seeds, with differences against a baseline paired by seed.

    Parameters
    ----------
    records : sequence of dict
        Records as returned by :func:`load_records` (several experiments may be mixed).
    baseline : str, optional
        Experiment name to compare against. Each experiment's value for a metric and embedding
        is paired with the baseline's value for the same metric, embedding and seed.
    split : str
        Only records of this split are used.

    Returns
    -------
    list of SummaryRow
        Ordered by experiment (first appearance), embedding (first appearance), then metric
        (the order of ``METRIC_LABELS``, unknown metrics after it).
    """
    table = _values_by_seed(records, split)
    experiments = list(dict.fromkeys(key[0] for key in table))
    if baseline is not None and baseline not in experiments:
        raise ValueError(
            f"baseline must be one of the experiments with {split!r} records {experiments}, "
            f"got {baseline!r}"
        )
    embeddings = list(dict.fromkeys(key[1] for key in table))
    metrics = _metric_order([key[2] for key in table])
    rows = []
    for experiment in experiments:
        for embedding in embeddings:
            for metric in metrics:
                per_seed = table.get((experiment, embedding, metric))
                if per_seed is None:
                    continue
                mean, half = t_interval(list(per_seed.values()))
                row = SummaryRow(experiment, split, embedding, metric, mean, half, len(per_seed))
                if baseline is not None and experiment != baseline:
                    _add_difference(row, per_seed, table.get((baseline, embedding, metric), {}),
                                    baseline)
                rows.append(row)
    return rows


def _add_difference(row: SummaryRow, per_seed: dict, base: dict, baseline: str) -> None:
    shared = [seed for seed in per_seed if seed in base]
    row.baseline = baseline
    row.n_pairs = len(shared)
    if shared:
        row.diff_mean, row.diff_half_width = t_interval(
            [per_seed[seed] - base[seed] for seed in shared]
        )


def _fmt(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _cell(row: SummaryRow) -> str:
    text = f"{_fmt(row.mean)} ± {_fmt(row.half_width)}"
    if row.diff_mean is not None:
        pairs = "" if row.n_pairs == row.n else f", {row.n_pairs} pairs"
        text += f" (Δ {_fmt(row.diff_mean, True)} ± {_fmt(row.diff_half_width)}{pairs})"
    elif row.baseline is not None:
        text += " (Δ n/a: no shared seed)"
    return text


def _check_metrics(rows: Sequence[SummaryRow], metrics: Sequence[str] | None) -> list[str]:
    present = _metric_order([row.metric for row in rows])
    if metrics is None:
        return present
    unknown = [m for m in metrics if m not in present]
    if unknown:
        raise ValueError(f"metrics must be among those in rows {present}, got unknown {unknown}")
    return list(metrics)


def _groups(rows: Sequence[SummaryRow]) -> dict[tuple[str, str, str], dict[str, SummaryRow]]:
    groups: dict[tuple[str, str, str], dict[str, SummaryRow]] = {}
    for row in rows:
        groups.setdefault((row.experiment, row.split, row.embedding), {})[row.metric] = row
    return groups


def markdown_table(rows: Sequence[SummaryRow], metrics: Sequence[str] | None = None) -> str:
    """Render summary rows as a markdown table.

    One line per (experiment, embedding) (and split, with a split column when rows mix
    splits). A metric cell reads ``0.4123 ± 0.0110``: the mean over seeds and its 95%
    t-interval half-width. For an experiment compared with a baseline the cell goes on with
    ``(Δ +0.0040 ± 0.0030)``, the paired difference to the baseline and its half-width (with
    the number of pairs when fewer than the seeds), or ``(Δ n/a: no shared seed)``; the header
    names the baseline. ``n/a`` stands for an undefined half-width (one seed or one pair) and
    ``–`` for a metric an experiment lacks.

    Parameters
    ----------
    rows : sequence of SummaryRow
        Output of :func:`summarize`.
    metrics : sequence of str, optional
        Metric columns in order; by default every metric in ``rows``.

    Returns
    -------
    str
        The table, one line per table row, ending with a newline.
    """
    columns = _check_metrics(rows, metrics)
    groups = _groups(rows)
    baselines = sorted({row.baseline for row in rows if row.baseline is not None})
    with_split = len({row.split for row in rows}) > 1
    suffix = f" (Δ vs {', '.join(baselines)})" if baselines else ""
    header = ["Experiment", *(["Split"] if with_split else []), "Embedding", "Seeds"]
    header += [METRIC_LABELS.get(m, m) + suffix for m in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (experiment, split, embedding), by_metric in groups.items():
        seeds = max(row.n for row in by_metric.values())
        cells = [experiment, *([split] if with_split else []), embedding, str(seeds)]
        cells += [_cell(by_metric[m]) if m in by_metric else "–" for m in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_NUMBER = r"n/a|[-+]?\d+\.\d+"
_CELL = re.compile(
    rf"^(?P<mean>{_NUMBER}) ± (?P<hw>{_NUMBER})"
    rf"(?: \((?:Δ (?P<diff>{_NUMBER}) ± (?P<diff_hw>{_NUMBER})(?:, (?P<pairs>\d+) pairs)?"
    rf"|(?P<unpaired>Δ n/a: no shared seed))\))?$"
)
_BASELINE_SUFFIX = re.compile(r" \(Δ vs (?P<baseline>[^)]+)\)$")


def _split_heading(split: str) -> str:
    what = "Test split" if split == "test" else f"Split {split!r}"
    return f"{what}. Mean over seeds ± half-width of the 95% Student-t interval."


def _number(text: str) -> float:
    return math.nan if text == "n/a" else float(text)


def read_report_table(text: str, split: str = "test") -> list[SummaryRow]:
    """Read back the summary table that :func:`write_report` put in a ``report.md``.

    The inverse of :func:`markdown_table` for the table that follows the report's line for
    ``split``: one :class:`SummaryRow` per metric cell, with the values as printed (4 decimals,
    ``n/a`` read as nan). It lets a published report be quoted without its experiment folders.

    Parameters
    ----------
    text : str
        The text of a ``report.md``.
    split : str
        The split whose table to read: ``"test"`` or the split given to :func:`write_report`.

    Returns
    -------
    list of SummaryRow

    Raises
    ------
    ValueError
        If ``text`` has no table for ``split`` or a cell is not in :func:`markdown_table`'s form.
    """
    lines = text.splitlines()
    heading = _split_heading(split)
    if heading not in lines:
        raise ValueError(f"text must hold a report table for split {split!r} (the line {heading!r}), found none")
    start = next(i for i in range(lines.index(heading), len(lines)) if lines[i].startswith("| "))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, body = table[0], table[2:]
    by_label = {label: metric for metric, label in METRIC_LABELS.items()}
    with_split = header[1] == "Split"
    first_metric = 4 if with_split else 3
    metrics, baselines = [], set()
    for label in header[first_metric:]:
        match = _BASELINE_SUFFIX.search(label)
        if match is not None:
            baselines.add(match["baseline"])
            label = label[: match.start()]
        metrics.append(by_label.get(label, label))
    baseline = baselines.pop() if len(baselines) == 1 else None
    rows = []
    for cells in body:
        experiment, embedding, seeds = cells[0], cells[first_metric - 2], int(cells[first_metric - 1])
        row_split = cells[1] if with_split else split
        for metric, cell in zip(metrics, cells[first_metric:]):
            if cell == "–":
                continue
            match = _CELL.match(cell)
            if match is None:
                raise ValueError(f"report cell for {experiment} {metric} must read 'mean ± half-width', got {cell!r}")
            paired = match["diff"] is not None
            rows.append(SummaryRow(
                experiment, row_split, embedding, metric, _number(match["mean"]), _number(match["hw"]), seeds,
                diff_mean=_number(match["diff"]) if paired else None,
                diff_half_width=_number(match["diff_hw"]) if paired else None,
                n_pairs=(int(match["pairs"]) if match["pairs"] else seeds) if paired else 0,
                baseline=baseline if paired or match["unpaired"] else None,
            ))
    return rows


def _save(fig: Figure, path: PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)


def plot_metric_comparison(
    rows: Sequence[SummaryRow], path: PathLike, metrics: Sequence[str] | None = None
) -> None:
    """Bar chart of each metric per (experiment, embedding), with 95% interval error bars.

    Parameters
    ----------
    rows : sequence of SummaryRow
        Output of :func:`summarize`.
    path : path
        PNG file to write.
    metrics : sequence of str, optional
        One subplot per metric, in this order; by default every metric in ``rows``.
    """
    columns = _check_metrics(rows, metrics)
    if not columns:
        raise ValueError("rows must hold at least one metric to plot, got none")
    groups = _groups(rows)
    with_split = len({row.split for row in rows}) > 1
    labels = [f"{e}\n{s + ' ' if with_split else ''}{emb}" for e, s, emb in groups]
    ncols = min(len(columns), 4)
    nrows = math.ceil(len(columns) / ncols)
    panel_width = max(3.0, 1.5 + 0.6 * len(labels))
    fig = Figure(figsize=(panel_width * ncols, 3.8 * nrows))
    for i, metric in enumerate(columns):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        found = [g.get(metric) for g in groups.values()]
        means = [r.mean if r else math.nan for r in found]
        errors = [r.half_width if r and not math.isnan(r.half_width) else 0.0 for r in found]
        ax.bar(range(len(labels)), means, yerr=errors, capsize=4,
               color=[f"C{j % 10}" for j in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Mean over seeds, 95% t-interval")
    fig.tight_layout()
    _save(fig, path)


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
                raise ValueError(f"{csv_path} must start with a header row beginning "
                                 f"'~iteration~', got {row!r}")
            by_iteration[_to_float(row[0])] = {
                name: _to_float(cell) for name, cell in zip(header, row[1:])
            }
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


def _seed_dirs(exp_dir: PathLike) -> list[Path]:
    folder = Path(exp_dir)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = SEED_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return [child for _, child in sorted(found)]


def _experiment_name(exp_dir: PathLike) -> str:
    try:
        return json.loads((Path(exp_dir) / "results.json").read_text())["experiment"]
    except (OSError, ValueError, KeyError, TypeError):
        return Path(exp_dir).name


def loss_history_files(exp_dir: PathLike, log_file: str = "loss_histories.csv") -> list[Path]:
    """The ``loss_histories.csv`` (or another record-keeper CSV) of every training run of an
    experiment, by seed then fold.

    A run logs either to ``seed_<s>/logs/`` or, with one training per cross-validation fold,
    to ``seed_<s>/fold_<f>/logs/``; both places are searched.

    Parameters
    ----------
    exp_dir : path
        Experiment folder.
    log_file : str
        File name in each ``logs/`` folder; a glob pattern is allowed (the first match in sorted
        order is taken), e.g. ``"*_JacobianDeterminantRegularizer.csv"`` for a regularizer's stats.

    Returns
    -------
    list of pathlib.Path
        Existing CSV files; empty when there is none.
    """
    found = []
    for seed_dir in _seed_dirs(exp_dir):
        run_dirs = [seed_dir] + sorted(
            (d for d in seed_dir.glob("fold_*") if d.is_dir() and d.name[5:].isdigit()),
            key=lambda d: int(d.name[5:]),
        )
        found += [next(iter(sorted((d / "logs").glob(log_file))), None) for d in run_dirs]
    return [path for path in found if path is not None and path.is_file()]


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
        The CSV to read in each run's ``logs/`` folder, as for :func:`loss_history_files`.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, int) or None
        Every iteration logged by some run, the mean at each iteration over the runs that logged
        it (nan values ignored), and the number of runs with the column; ``None`` when no run
        logged the column.
    """
    curves = []
    for csv_path in loss_history_files(exp_dir, log_file):
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


def validation_curve_table(
    exp_dirs: Sequence[PathLike], column: str = VAL_MAP_AT_R, log_file: str = VAL_LOG
) -> str | None:
    """A markdown table of validation accuracy after each epoch, one row per experiment.

    Each cell is the mean over the experiment's training runs (seeds and folds) that validated at
    that epoch, from the tester's accuracy CSV in each run's ``logs/`` folder; the last column
    counts the runs. An epoch some runs did not reach (early stopping) averages the others.

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
    str or None
        The table, or ``None`` when no experiment logged the column.
    """
    curves = []
    for exp_dir in exp_dirs:
        curve = mean_loss_curve(exp_dir, column, log_file)
        if curve is not None:
            curves.append((_experiment_name(exp_dir), dict(zip(curve[0], curve[1])), curve[2]))
    if not curves:
        return None
    epochs = sorted(set().union(*(c[1] for c in curves)))
    lines = [
        "| Experiment | " + " | ".join(f"{e:g}" for e in epochs) + " | runs |",
        "|---|" + "---|" * (len(epochs) + 1),
    ]
    for name, by_epoch, n in curves:
        cells = [_fmt(by_epoch[e]) if e in by_epoch and not math.isnan(by_epoch[e]) else ""
                 for e in epochs]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)


def plot_training_curves(
    exp_dirs: Sequence[PathLike], path: PathLike, column: str = "total_loss",
    log_file: str = "loss_histories.csv", xlabel: str = "iteration",
) -> None:
    """Plot one loss column against iteration, averaged over seeds, one line per experiment.

    Each experiment's line is :func:`mean_loss_curve`, the mean over its training runs (one per
    seed, or one per seed and fold). Runs without the column are skipped, an experiment with no
    usable run gets no line, and a figure with no line at all says so in its title.

    Parameters
    ----------
    exp_dirs : sequence of path
        Experiment folders (see :func:`loss_history_files` for where the CSVs are looked for).
    path : path
        PNG file to write.
    column : str
        Loss name as logged by record-keeper, e.g. ``"total_loss"`` or ``"metric_loss"``, or a
        stat name of the CSV ``log_file`` names.
    log_file : str
        The CSV to read in each run's ``logs/`` folder, as for :func:`loss_history_files`.
    xlabel : str
        What the CSV's first column counts: ``"iteration"``, or ``"epoch"`` for a tester's
        accuracy CSV.
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    plotted = 0
    for exp_dir in exp_dirs:
        curve = mean_loss_curve(exp_dir, column, log_file)
        if curve is None:
            continue
        iterations, mean, n = curve
        ax.plot(iterations, mean, label=f"{_experiment_name(exp_dir)} ({n} run{'s' if n > 1 else ''})")
        plotted += 1
    ax.set_xlabel(xlabel)
    ax.set_ylabel(column)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
        ax.set_title(f"{column}, mean over runs")
    else:
        ax.set_title(f"no '{column}' found in any {log_file}")
    fig.tight_layout()
    _save(fig, path)


def plot_embedding_map(
    embeddings: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    path: PathLike,
    max_classes: int = 20,
) -> None:
    """Scatter the first two principal components of embeddings, coloured by class.

    Only the ``max_classes`` smallest labels are drawn; the principal axes are fitted on those
    points (centred, by SVD).

    Parameters
    ----------
    embeddings : Tensor or ndarray
        Shape ``(N, D)``.
    labels : Tensor or ndarray
        Shape ``(N,)``, integer class labels.
    path : path
        PNG file to write.
    max_classes : int
        Number of classes to draw.
    """
    x = np.asarray(torch.as_tensor(embeddings).detach().cpu(), dtype=np.float64)
    y = np.asarray(torch.as_tensor(labels).detach().cpu()).ravel()
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must have shape (N, D) with N >= 1, got {x.shape}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have one entry per embedding ({x.shape[0]}), got {y.shape[0]}")
    if not isinstance(max_classes, int) or max_classes < 1:
        raise ValueError(f"max_classes must be a positive integer, got {max_classes!r}")
    classes = np.unique(y)[:max_classes]
    keep = np.isin(y, classes)
    points = _pca_2d(x[keep])
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, cls in enumerate(classes):
        sel = y[keep] == cls
        ax.scatter(points[sel, 0], points[sel, 1], s=8, color=cmap(i % cmap.N), label=str(cls))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"test embeddings, {len(classes)} classes (PCA)")
    if len(classes) <= 20:
        ax.legend(fontsize=6, markerscale=1.5, ncol=2, loc="best")
    fig.tight_layout()
    _save(fig, path)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Coordinates of ``x`` on its first two principal axes (zero-padded below two)."""
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _first_embeddings(exp_dir: PathLike) -> tuple[str, dict] | None:
    """The seed folder name and contents of the lowest seed's ``test_embeddings.pt``, if any."""
    for seed_dir in _seed_dirs(exp_dir):
        path = seed_dir / "test_embeddings.pt"
        if path.is_file():
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or not {"embeddings", "labels"} <= set(data):
                raise ValueError(f"{path} must hold a dict with 'embeddings' and 'labels'")
            return seed_dir.name, data
    return None


def write_report(
    exp_dirs: Sequence[PathLike],
    out_dir: PathLike,
    baseline: str | None = None,
    split: str = "test",
    title: str = "Benchmark report",
    command: str | None = None,
) -> str:
    """Write ``report.md`` and its figures for a set of experiments.

    Writes ``metrics.png`` (test metrics per experiment), ``training_curves.png``
    (``total_loss`` over iterations), a table of validation MAP@R after each epoch when the runs
    logged one (:func:`validation_curve_table`) and, for each experiment with a
    ``seed_<s>/test_embeddings.pt`` (the lowest such seed), ``embeddings_<experiment>.png``.

    Parameters
    ----------
    exp_dirs : sequence of path
        Experiment folders, each with a ``results.json``; experiment names must differ.
    out_dir : path
        Folder to write into (created if missing).
    baseline : str, optional
        Experiment name the others are compared with, paired by seed.
    split : str
        ``"test"`` (held-out classes) or ``"val"`` (the best validation MAP@R averaged over the
        cross-validation folds, the number a hyperparameter search compares).
    title : str
        The report's heading.
    command : str, optional
        The command that made this report; written under the heading, followed by the command
        of each experiment that its ``results.json`` records.

    Returns
    -------
    str
        The markdown text written to ``report.md``.
    """
    if not exp_dirs:
        raise ValueError("exp_dirs must name at least one experiment folder, got none")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, names, commands, devices = [], [], [], []
    for exp_dir in exp_dirs:
        data = _read_results(exp_dir)
        name = data["experiment"]
        if name in names:
            raise ValueError(f"exp_dirs must hold distinct experiments, {name!r} appears twice")
        names.append(name)
        records += data["records_with_name"]
        if data.get("command"):
            commands.append(data["command"])
        devices.append(data.get("device"))
    rows = summarize(records, baseline=baseline, split=split)
    lines = [f"# {title}", "", *provenance_lines(command, commands), *device_lines(devices)]
    if rows:
        lines += [_split_heading(split), ""]
        if baseline is not None:
            lines += [f"Δ: difference to `{baseline}` paired by seed, with its 95% interval.", ""]
        lines += [markdown_table(rows)]
        plot_metric_comparison(rows, out / "metrics.png")
        lines += ["![metrics](metrics.png)", ""]
    else:
        lines += [f"No {split} records found.", ""]
    plot_training_curves(exp_dirs, out / "training_curves.png")
    lines += ["## Training curves", "", "![training curves](training_curves.png)", ""]
    val_table = validation_curve_table(exp_dirs)
    if val_table is not None:
        lines += ["## Validation MAP@R after each epoch", "",
                  "Mean over each experiment's training runs (seeds and folds); the columns are epochs.",
                  "", val_table, ""]
    for exp_dir, name in zip(exp_dirs, names):
        found = _first_embeddings(exp_dir)
        if found is None:
            continue
        seed, data = found
        file_name = f"embeddings_{_safe_name(name)}.png"
        plot_embedding_map(data["embeddings"], data["labels"], out / file_name)
        lines += [f"## Test embeddings: {name} ({seed})", "", f"![{name}]({file_name})", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text
