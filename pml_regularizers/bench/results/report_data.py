"""The numbers of a benchmark report as data: ``report.json``, written beside ``report.md``.

Programs that quote a report read this file, never the Markdown. Its keys:

- ``title``, ``command`` (the command that made the report, or null), ``split`` (the split its
  table summarizes) and ``baseline`` (the experiment the others are paired with, or null);
- ``experiments``: one object per experiment folder, in the report's order, with ``name``,
  ``command`` (the ``pml-bench run`` that ran it) and ``device``, each null when not recorded;
- ``rows``: the summary table, one object per :class:`~pml_regularizers.bench.results.stats.SummaryRow`
  with every field of it, at full precision;
- ``validation_curves``: validation MAP@R after each epoch, one object per experiment that logged
  it (``experiment``, ``epochs``, ``values``, ``runs``); empty when none did;
- ``searches`` (optional): for a report of searches (``pml-bench search`` and ``pml-bench study``),
  one object per searched config: its name, budget, space, chosen setting and its validation
  MAP@R, the keys chosen at an edge of their range, every trial (number, state, value,
  parameters, epochs, CPU and wall seconds, whether the budget counts it), and the CPU and wall
  seconds of the search and of the final runs
  (:meth:`~pml_regularizers.bench.search.search.SearchResult.to_json`);
- ``source`` (optional): where the numbers come from when not from the experiment folders, e.g.
  ``"converted from report.md (values rounded to 4 decimals)"``.

A number that is not defined (the half-width of an interval over one seed) is written as null,
so that the file is standard JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .stats import SummaryRow

__all__ = ["REPORT_JSON", "ExperimentInfo", "ValidationCurve", "ReportData", "write_report_data", "read_report_data"]

PathLike = str | os.PathLike
REPORT_JSON = "report.json"


@dataclass
class ExperimentInfo:
    """One experiment of a report.

    Attributes
    ----------
    name : str
        The experiment's name.
    command : str or None
        The command that ran it, as its ``results.json`` records it.
    device : str or None
        The device that finished it (``cpu`` or ``cuda: <GPU name>``).
    """

    name: str
    command: str | None = None
    device: str | None = None


@dataclass
class ValidationCurve:
    """Validation accuracy after each epoch of one experiment, averaged over its training runs.

    Attributes
    ----------
    experiment : str
        The experiment's name.
    epochs : list of float
        The epochs some run validated at, in increasing order.
    values : list of float
        The mean at each epoch over the runs that validated then (nan where every value was nan).
    runs : int
        The number of training runs (seeds and folds) that logged the accuracy.
    """

    experiment: str
    epochs: list[float]
    values: list[float]
    runs: int


@dataclass
class ReportData:
    """What ``report.json`` holds (see the module's description for each key)."""

    title: str
    command: str | None
    split: str
    baseline: str | None
    experiments: list[ExperimentInfo]
    rows: list[SummaryRow]
    validation_curves: list[ValidationCurve] = field(default_factory=list)
    source: str | None = None
    searches: list[dict] = field(default_factory=list)


def _to_json(value: float | None) -> float | None:
    return None if value is not None and math.isnan(value) else value


def _from_json(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _row_to_json(row: SummaryRow) -> dict:
    data = asdict(row)
    for key in ("mean", "half_width", "diff_mean", "diff_half_width"):
        data[key] = _to_json(data[key])
    return data


def _row_from_json(data: dict) -> SummaryRow:
    row = SummaryRow(**data)
    row.mean, row.half_width = _from_json(row.mean), _from_json(row.half_width)
    if row.diff_mean is not None:  # a difference over one pair has an undefined half-width
        row.diff_mean, row.diff_half_width = float(row.diff_mean), _from_json(row.diff_half_width)
    return row


def write_report_data(data: ReportData, path: PathLike) -> None:
    """Write ``data`` as JSON to ``path`` (a ``report.json``); nan is written as null."""
    out = asdict(data)
    out["rows"] = [_row_to_json(row) for row in data.rows]
    out["validation_curves"] = [
        {**asdict(curve), "values": [_to_json(v) for v in curve.values]} for curve in data.validation_curves
    ]
    if data.source is None:
        del out["source"]
    if not data.searches:
        del out["searches"]
    Path(path).write_text(json.dumps(out, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def read_report_data(path: PathLike) -> ReportData:
    """Read a ``report.json`` written by :func:`write_report_data`.

    Parameters
    ----------
    path : path
        The ``report.json`` file, or the report folder that holds it.

    Returns
    -------
    ReportData
        The rows as :class:`~pml_regularizers.bench.results.stats.SummaryRow` with null read back as nan
        (a ``diff_half_width`` stays ``None`` where the row has no difference).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not valid JSON or lacks a key of the format; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no report data at {path}: expected a {REPORT_JSON} written beside report.md")
    try:
        raw = json.loads(path.read_text())
        rows = [_row_from_json(r) for r in raw["rows"]]
        experiments = [ExperimentInfo(**e) for e in raw["experiments"]]
        curves = [
            ValidationCurve(c["experiment"], c["epochs"], [_from_json(v) for v in c["values"]], c["runs"])
            for c in raw["validation_curves"]
        ]
        searches = raw.get("searches", [])
        if not isinstance(searches, list) or not all(isinstance(s, dict) for s in searches):
            raise TypeError("'searches' must be a list of objects")
        return ReportData(
            raw["title"],
            raw["command"],
            raw["split"],
            raw["baseline"],
            experiments,
            rows,
            curves,
            raw.get("source"),
            searches,
        )
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a report's data ({REPORT_JSON} format): {err!r}") from err
