# The results page's summary: does each method help retrieval of unseen classes, per data set and
# embedding size?
#
# CELLS lists every (method row, data-set column, embedding size) that a study measured, with the
# report that measured it and the two experiments compared there: the method, and its comparator,
# which is that report's baseline, so the report's report.json holds their difference in separated
# test MAP@R paired by seed, with its 95% interval. This script reads those numbers (never the
# Markdown, never an experiment folder) and writes:
#   docs/results/summary/summary.json   every listed cell: its report, the comparator's MAP@R, the
#                                       difference, its half-width and the verdict (data to read back);
#   docs/_static/results_summary.png    the differences with their intervals, one panel per data set
#                                       and size, the zero line marked;
#   docs/results.md                     the verdict table, between the summary-table markers only.
# A listed cell whose report.json is not there yet (a study still running) reads "—", like a cell
# that no study measured. Nothing is trained.
#
# Run (after any report of a listed cell is made):
#     .venv/bin/python -m experiments.results_summary
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pml_regularizers.bench import PRIMARY_METRIC, REPORT_JSON, SummaryRow, read_report_data, verdict, write_json

EMBEDDING = "separated"
START = "<!-- summary-table:start -->"
END = "<!-- summary-table:end -->"
MISSING = "—"
# The data part of the archived 964-character check's report tags (the former
# experiments/regularizer_check.py wrote "omniglot964").
CHECK_DATA = "omniglot964"
SUMMARY_JSON = Path("summary") / "summary.json"

# Columns: the data sets, each at every size of SIZES.
CHECK = "Omniglot, 964 characters"  # the regularizer check's reports: the full background set
OMNIGLOT = "Omniglot, 242 characters"  # the evidence reports on the official small background zip
GLYPHS = "glyphs, 300 classes × 10"  # the evidence reports at 10 glyphs a class (600 classes, half train)
COLUMNS = (CHECK, OMNIGLOT, GLYPHS)
SIZES = (32, 128)
_EVIDENCE_DATA = {OMNIGLOT: "omniglot", GLYPHS: "glyphs-n10"}

# Rows: a method on a base loss, against that loss alone; the flow rows against the same flow
# without the regularizer, or the comparator in brackets.
SM_PA = "SkewedMean on ProxyAnchor"
SM_NS = "SkewedMean on NormalizedSoftmax"
RF_PA = "RegularFace (PML) on ProxyAnchor"
RF_NS = "RegularFace (PML) on NormalizedSoftmax"
CI_PA = "CenterInvariant (PML) on ProxyAnchor"
CI_NS = "CenterInvariant (PML) on NormalizedSoftmax"
DVML_MS = "DVML on MultiSimilarity"
DVML_TRIPLET = "DVML on Triplet"
JD_MS = "JacobianDeterminant, MultiSimilarity flow"
JD_PA = "JacobianDeterminant, ProxyAnchor flow"
JD_MS_LINEAR = "JacobianDeterminant, MultiSimilarity flow [vs linear]"
JD_FULL = "JacobianDeterminantLoss (dueling flows), ProxyAnchor"
ROWS = (SM_PA, SM_NS, RF_PA, RF_NS, CI_PA, CI_NS, DVML_MS, DVML_TRIPLET, JD_MS, JD_PA, JD_MS_LINEAR, JD_FULL)

_VERDICTS = {"better": "helps", "worse": "hurts", "no clear difference": "no measurable effect"}


@dataclass(frozen=True)
class Cell:
    """One measured cell of the summary.

    Attributes
    ----------
    row, column : str
        Its method row (of ``ROWS``) and data-set column (of ``COLUMNS``).
    size : int
        The embedding size.
    report : str
        The report folder under ``docs/results``; ``{data}`` stands for the check's data tag.
    method, comparator : str
        The roles of the two experiments compared: their names are ``<experiments>-<role>``. The
        comparator must be the report's baseline, so that the report holds the paired difference.
    experiments : str
        The prefix of the report's experiment names (``{data}`` as in ``report``).
    """

    row: str
    column: str
    size: int
    report: str
    method: str
    comparator: str
    experiments: str

    def report_tag(self, check_data: str = CHECK_DATA) -> str:
        return self.report.format(data=check_data)

    def experiment(self, role: str, check_data: str = CHECK_DATA) -> str:
        return f"{self.experiments.format(data=check_data)}-{role}"


def _check(row: str, report: str, method: str, comparator: str, family: str | None = None) -> list[Cell]:
    """The check's cells of ``row`` at each size: report ``regularizer_check_<report>-{data}-d<size>``,
    whose experiments are named after ``family`` (default: ``report``)."""
    return [
        Cell(
            row,
            CHECK,
            size,
            f"regularizer_check_{report}-{{data}}-d{size}",
            method,
            comparator,
            f"regularizer_check_{family or report}-{{data}}-d{size}",
        )
        for size in SIZES
    ]


def _evidence(row: str, study: str) -> list[Cell]:
    """An evidence study's cells at each data set and size: ``<study>-<data>-d<size>``, method
    ``-method`` against ``-baseline``."""
    return [
        Cell(row, column, size, tag, "method", "baseline", tag)
        for column, data in _EVIDENCE_DATA.items()
        for size in SIZES
        for tag in [f"{study}-{data}-d{size}"]
    ]


CELLS: tuple[Cell, ...] = (
    # The 964-character check: every regularizer against its bare base loss; DVML against
    # MultiSimilarity; the regularized flow against the linear embedder (the multi_similarity report,
    # whose baseline is linear) and against the bare flow (the flow_multi_similarity report, whose
    # experiments carry the multi_similarity family's names).
    *_check(SM_PA, "proxy_anchor", "skewed_mean", "baseline"),
    *_check(SM_NS, "normalized_softmax", "skewed_mean", "baseline"),
    *_check(RF_PA, "proxy_anchor", "regular_face", "baseline"),
    *_check(RF_NS, "normalized_softmax", "regular_face", "baseline"),
    *_check(CI_PA, "proxy_anchor", "center_invariant", "baseline"),
    *_check(CI_NS, "normalized_softmax", "center_invariant", "baseline"),
    *_check(DVML_MS, "multi_similarity", "dvml", "baseline"),
    *_check(JD_MS, "flow_multi_similarity", "jacobian_determinant", "flow", family="multi_similarity"),
    *_check(JD_MS_LINEAR, "multi_similarity", "jacobian_determinant", "baseline"),
    # The evidence studies (their baseline is the base loss alone, or the bare flow for the flow
    # studies; the JacobianDeterminant rows are the square penalty's weight searches, the latest).
    *_evidence(SM_PA, "skewed_mean_proxy_anchor"),
    *_evidence(SM_NS, "skewed_mean_normalized_softmax"),
    *_evidence(DVML_MS, "dvml_multi_similarity"),
    *_evidence(DVML_TRIPLET, "dvml_triplet"),
    *_evidence(JD_MS, "jacobian_determinant_square_multi_similarity"),
    *_evidence(JD_PA, "jacobian_determinant_square_proxy_anchor"),
    *_evidence(JD_FULL, "jacobian_determinant_full_proxy_anchor"),
)


@dataclass
class CellResult:
    """A cell and its two separated test MAP@R rows, or None for both where its report is not made."""

    cell: Cell
    report: str
    baseline: SummaryRow | None = None
    method: SummaryRow | None = None


def read_cell(cell: Cell, docs: Path, check_data: str = CHECK_DATA) -> CellResult:
    """The separated test MAP@R rows of ``cell``'s comparator and method, from its report under ``docs``.

    Raises
    ------
    ValueError
        If the report exists but does not summarize the test split, its baseline is not the cell's
        comparator, or it lacks either experiment's row: the cell is listed wrongly.
    """
    tag = cell.report_tag(check_data)
    result = CellResult(cell, tag)
    path = docs / tag / REPORT_JSON
    if not path.is_file():
        return result
    numbers = read_report_data(path)
    comparator, method = cell.experiment(cell.comparator, check_data), cell.experiment(cell.method, check_data)
    if numbers.split != "test":
        raise ValueError(f"{path} must summarize the test split, got {numbers.split!r}")
    if numbers.baseline != comparator:
        raise ValueError(
            f"cell {cell.row!r}: the comparator {comparator} must be {path}'s baseline, got {numbers.baseline}"
        )
    rows = {r.experiment: r for r in numbers.rows if (r.metric, r.embedding) == (PRIMARY_METRIC, EMBEDDING)}
    for name in (comparator, method):
        if name not in rows:
            raise ValueError(f"cell {cell.row!r}: {path} has no {EMBEDDING} {PRIMARY_METRIC} row of {name}")
    result.baseline, result.method = rows[comparator], rows[method]
    return result


def read_cells(docs: Path, check_data: str = CHECK_DATA) -> list[CellResult]:
    """:func:`read_cell` for every cell of ``CELLS``, in order."""
    return [read_cell(cell, docs, check_data) for cell in CELLS]


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def cell_text(row: SummaryRow | None) -> str:
    """The table's words for a method row compared with its comparator: where the paired difference's
    95% interval lies, with the difference ± half-width (3 decimals); ``—`` for no row."""
    if row is None:
        return MISSING
    found = verdict(row)
    if found not in _VERDICTS or row.diff_mean is None:  # one shared seed, or none: no interval
        return found
    numbers = f"{_signed(row.diff_mean)} ± {row.diff_half_width:.3f}"
    if found == "no clear difference":
        return f"{_VERDICTS[found]} ({numbers})"
    return f"{_VERDICTS[found]} by {numbers}"


def column_header(column: str, size: int) -> str:
    return f"{column}, {size}-d"


def summary_table(results: list[CellResult], docs: Path, page: Path) -> str:
    """The verdict table in Markdown: one row per method of ``ROWS``, one column per data set and
    size; each measured cell links to its report's page (relative to ``page``) when there is one."""
    found = {(r.cell.row, r.cell.column, r.cell.size): r for r in results}
    headers = [column_header(c, s) for c in COLUMNS for s in SIZES]
    lines = [f"| method | {' | '.join(headers)} |", f"|---|{'---|' * len(headers)}"]
    for row in ROWS:
        cells = []
        for column in COLUMNS:
            for size in SIZES:
                result = found.get((row, column, size))
                text = cell_text(result.method if result else None)
                report_md = docs / result.report / "report.md" if result else None
                if text != MISSING and report_md is not None and report_md.is_file():
                    text = f"[{text}]({Path(os.path.relpath(report_md, page.parent)).as_posix()})"
                cells.append(text)
        lines.append(f"| {row} | {' | '.join(cells)} |")
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the summary-table markers replaced by ``block`` (on lines of
    its own); everything else, the markers included, is kept as it is.

    Raises
    ------
    ValueError
        If ``text`` does not hold each marker exactly once, the start before the end.
    """
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"the page must hold {START} once, then {END} once")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


def write_table(page: Path, block: str) -> None:
    """Replace the table block of ``page`` by ``block``, leaving every other byte as it was."""
    page.write_bytes(replace_block(page.read_bytes().decode("utf-8"), block).encode("utf-8"))


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def summary_data(results: list[CellResult], check_data: str = CHECK_DATA) -> dict:
    """What ``summary.json`` holds: every listed cell, with null numbers where its report is not made."""
    cells = []
    for r in results:
        entry = {
            "row": r.cell.row,
            "column": r.cell.column,
            "size": r.cell.size,
            "report": r.report,
            "method": r.cell.experiment(r.cell.method, check_data),
            "comparator": r.cell.experiment(r.cell.comparator, check_data),
            "report_found": r.method is not None and r.baseline is not None,
            "baseline_map_at_r": None,
            "method_map_at_r": None,
            "diff": None,
            "half_width": None,
            "verdict": None,
        }
        if r.method is not None and r.baseline is not None:
            found = verdict(r.method)
            entry.update(
                baseline_map_at_r=_number(r.baseline.mean),
                method_map_at_r=_number(r.method.mean),
                diff=_number(r.method.diff_mean),
                half_width=_number(r.method.diff_half_width),
                verdict=_VERDICTS.get(found, found),
            )
        cells.append(entry)
    return {
        "metric": PRIMARY_METRIC,
        "embedding": EMBEDDING,
        "split": "test",
        "interval": "95% Student-t interval of the difference paired by seed",
        "rows": list(ROWS),
        "columns": [{"column": c, "size": s} for c in COLUMNS for s in SIZES],
        "cells": cells,
    }


_COLORS = {"helps": "tab:green", "hurts": "tab:red", "no measurable effect": "0.45"}


def plot_summary(results: list[CellResult], path: Path) -> None:
    """One panel per data set (rows) and size (columns), the methods on the y axis: each measured
    cell's difference with its 95% interval, coloured by verdict; ``—`` where there is none."""
    found = {(r.cell.row, r.cell.column, r.cell.size): r for r in results}
    fig = Figure(figsize=(9.0, 11.5), layout="constrained")
    axes = fig.subplots(len(COLUMNS), len(SIZES), sharey=True, squeeze=False)
    ys = {row: len(ROWS) - 1 - i for i, row in enumerate(ROWS)}
    for i, column in enumerate(COLUMNS):
        for j, size in enumerate(SIZES):
            ax = axes[i][j]
            ax.axvline(0.0, color="black", linewidth=0.9)
            spans = [0.0]
            for row, y in ys.items():
                result = found.get((row, column, size))
                method = result.method if result else None
                if method is None or method.diff_mean is None:
                    ax.text(0.0, y, MISSING, ha="center", va="center", color="0.6", fontsize=9)
                    continue
                half = (
                    0.0
                    if method.diff_half_width is None or math.isnan(method.diff_half_width)
                    else method.diff_half_width
                )
                word = _VERDICTS.get(verdict(method), "")
                ax.errorbar(
                    method.diff_mean, y, xerr=half, fmt="o", color=_COLORS.get(word, "0.45"), capsize=3, markersize=5
                )
                spans += [method.diff_mean - half, method.diff_mean + half]
            pad = max(0.1 * (max(spans) - min(spans)), 0.01)
            ax.set_xlim(min(spans) - pad, max(spans) + pad)
            if len(spans) == 1:
                ax.text(
                    0.5, 0.5, "no report yet", transform=ax.transAxes, ha="center", color="0.3", backgroundcolor="white"
                )
            ax.set_title(column_header(column, size), fontsize=10)
            ax.grid(axis="x", alpha=0.3)
            ax.tick_params(labelsize=9)
    axes[0][0].set_yticks(list(ys.values()), list(ys))
    axes[0][0].set_ylim(-0.7, len(ROWS) - 0.3)
    fig.supxlabel("Δ MAP@R to the comparator: separated test embeddings, 95% interval paired by seed", fontsize=10)
    handles = [Line2D([], [], marker="o", linestyle="", color=color, label=word) for word, color in _COLORS.items()]
    fig.legend(handles=handles, loc="outside upper center", ncols=3, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)


def write_summary(docs: Path, page: Path, figure: Path, check_data: str = CHECK_DATA) -> str:
    """Read every cell's report under ``docs`` and write ``docs/summary/summary.json``, ``figure``
    and the table block of ``page``; return the table."""
    results = read_cells(docs, check_data)
    write_json(docs / SUMMARY_JSON, summary_data(results, check_data))
    plot_summary(results, figure)
    table = summary_table(results, docs, page)
    write_table(page, table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The results page's verdict table, figure and summary.json.")
    parser.add_argument("--docs", type=Path, default=Path("docs/results"), help="the reports (default docs/results)")
    parser.add_argument(
        "--page", type=Path, default=Path("docs/results.md"), help="the page whose table block to write"
    )
    parser.add_argument(
        "--figure", type=Path, default=Path("docs/_static/results_summary.png"), help="the figure to write"
    )
    parser.add_argument(
        "--check-data",
        default=CHECK_DATA,
        help=f"the data tag of the 964-character check's reports (default {CHECK_DATA})",
    )
    args = parser.parse_args(argv)
    print(write_summary(args.docs, args.page, args.figure, args.check_data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
