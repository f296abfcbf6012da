"""Studies: a comparison of configs written as data, each config searched on validation under the
same budget, its chosen setting run ``final_seeds`` times and tested once, and the paired report.

A study is a YAML file: the published ones are ``pml_regularizers/bench/studies/<name>.yaml``
(``pml-bench study --list``); any other path works too. Its keys:

``title``
    The report's heading.
``overrides``
    Config overrides every row gets (as for ``pml-bench run``).
``budget``
    ``trials``, ``epochs``, ``cv_folds``, ``patience`` and ``final_seeds``
    (:class:`~pml_regularizers.bench.search.budget.SearchBudget`): the same for every row.
``space`` (optional)
    Search ranges every row gets on top of those its config declares
    (:func:`~pml_regularizers.bench.search.space.resolve_space`); ``null`` drops a key.
``rows``
    ``name: [overrides]`` or ``name: {overrides: [...], space: {...}}``, in order; a row's space
    comes on top of the study's.
``reports`` (optional)
    ``name: {title: ..., rows: [...]}``: reports of some rows each, the first row the baseline the
    others are paired with; by default one report of every row, paired with the first.
``curves`` (optional)
    ``[{log: "<CSV file pattern>", column: <column>}, ...]``: logged columns plotted over the
    final runs' training, in every report.
``center_geometry`` (optional, default false)
    Add the class centers' geometry at initialisation and at the tested epoch to every report
    (:mod:`~pml_regularizers.bench.results.center_geometry`).

:func:`run_study` runs it into ``<output_dir>/<study>-<dataset>-d<size>`` (a folder per row, as
:func:`~pml_regularizers.bench.search.search.run_search` lays it out) and writes the reports to
its ``report`` folder; it resumes whatever was done.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .budget import SearchBudget

__all__ = ["STUDIES_PACKAGE", "Curve", "Study", "StudyReport", "StudyRow", "list_studies", "load_study", "run_study"]

STUDIES_PACKAGE = "pml_regularizers.bench.studies"
_KEYS = ("title", "overrides", "budget", "space", "rows", "reports", "curves", "center_geometry")


@dataclass(frozen=True)
class StudyRow:
    """One config of a study: its overrides and the search ranges it adds."""

    name: str
    overrides: tuple[str, ...]
    space: dict[str, str | None]


@dataclass(frozen=True)
class StudyReport:
    """One report of a study: its rows, the first the baseline."""

    name: str
    title: str
    rows: tuple[str, ...]


@dataclass(frozen=True)
class Curve:
    """A logged column plotted over the final runs' training: the CSV file pattern of each run's
    ``logs/`` folder, and the column."""

    log: str
    column: str


@dataclass(frozen=True)
class Study:
    """A study file, checked (the module's description)."""

    name: str
    title: str
    overrides: tuple[str, ...]
    budget: SearchBudget
    space: dict[str, str | None]
    rows: tuple[StudyRow, ...]
    reports: tuple[StudyReport, ...]
    curves: tuple[Curve, ...] = ()
    center_geometry: bool = False
    source: str = ""

    def with_budget(self, **changes: Any) -> Study:
        """The study with some budget fields changed (the same for every row)."""
        import dataclasses

        budget = dataclasses.replace(self.budget, **changes)
        return dataclasses.replace(self, budget=budget)


def list_studies() -> list[str]:
    """The names of the published studies."""
    files = resources.files(STUDIES_PACKAGE).iterdir()
    return sorted(p.name.removesuffix(".yaml") for p in files if p.name.endswith(".yaml"))


def load_study(name_or_path: str | os.PathLike) -> Study:
    """Read and check a study file: a published study's name, or the path of a YAML file.

    Raises
    ------
    ConfigError
        For an unknown name (listing the published ones), a file that is not YAML, or a key or value
        the format does not take; the message names the file and the key.
    """
    import yaml

    text, source, name = _study_text(name_or_path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"study {source} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"study {source} must be a mapping with keys {', '.join(_KEYS)}")
    unknown = sorted(set(raw) - set(_KEYS))
    missing = [k for k in ("title", "budget", "rows") if k not in raw]
    if unknown or missing:
        raise ConfigError(
            f"study {source}: unknown keys {unknown}, missing keys {missing}; it takes {', '.join(_KEYS)}"
        )
    where = f"study {source}"
    budget_raw = _mapping(raw["budget"], f"{where}: budget")
    fields = ("trials", "epochs", "cv_folds", "patience", "final_seeds")
    if sorted(budget_raw) != sorted(fields):
        raise ConfigError(f"{where}: budget must set exactly {', '.join(fields)}, got {sorted(budget_raw)}")
    try:
        budget = SearchBudget(**budget_raw)
    except ConfigError as err:
        raise ConfigError(f"{where}: budget: {err}") from None
    rows = tuple(_row(str(k), v, where) for k, v in _mapping(raw["rows"], f"{where}: rows").items())
    if not rows:
        raise ConfigError(f"{where}: rows must name at least one config")
    row_names = [r.name for r in rows]
    reports = tuple(
        _report(str(k), v, row_names, where) for k, v in _mapping(raw.get("reports") or {}, f"{where}: reports").items()
    ) or (StudyReport(name, str(raw["title"]), tuple(row_names)),)
    curves = tuple(_curve(c, where) for c in _sequence(raw.get("curves") or [], f"{where}: curves"))
    geometry = raw.get("center_geometry", False)
    if not isinstance(geometry, bool):
        raise ConfigError(f"{where}: center_geometry must be true or false, got {geometry!r}")
    return Study(
        name=name,
        title=str(raw["title"]),
        overrides=_strings(raw.get("overrides") or [], f"{where}: overrides"),
        budget=budget,
        space=_space(raw.get("space") or {}, f"{where}: space"),
        rows=rows,
        reports=reports,
        curves=curves,
        center_geometry=geometry,
        source=source,
    )


def _study_text(name_or_path: str | os.PathLike) -> tuple[str, str, str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            return path.read_text(), str(path), path.stem
        except OSError as err:
            raise ConfigError(f"cannot read study file {path}: {err.strerror or err}") from None
    name = str(name_or_path)
    published = list_studies()
    if name not in published:
        from ..spec.run_spec import closest

        hint = closest(name, published, "")
        raise ConfigError(f"no study {name!r}{hint}; the published ones: {', '.join(published)} (or give a .yaml path)")
    return (resources.files(STUDIES_PACKAGE) / f"{name}.yaml").read_text(), name, name


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    return value


def _sequence(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, got {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = _sequence(value, where)
    if not all(isinstance(v, str) and "=" in v for v in items):
        raise ConfigError(f"{where} must be a list of key=value overrides, got {value!r}")
    return tuple(items)


def _space(value: Any, where: str) -> dict[str, str | None]:
    space = _mapping(value, where)
    for key, expression in space.items():
        if not isinstance(key, str) or not (expression is None or isinstance(expression, str)):
            raise ConfigError(f"{where}: {key!r} must map to a range expression or null, got {expression!r}")
    return dict(space)


def _row(name: str, value: Any, where: str) -> StudyRow:
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"{where}: row name {name!r} must be a folder name")
    if isinstance(value, list) or value is None:
        return StudyRow(name, _strings(value or [], f"{where}: rows.{name}"), {})
    row = _mapping(value, f"{where}: rows.{name}")
    unknown = sorted(set(row) - {"overrides", "space"})
    if unknown:
        raise ConfigError(f"{where}: rows.{name} takes overrides and space, not {unknown}")
    return StudyRow(
        name,
        _strings(row.get("overrides") or [], f"{where}: rows.{name}.overrides"),
        _space(row.get("space") or {}, f"{where}: rows.{name}.space"),
    )


def _report(name: str, value: Any, rows: Sequence[str], where: str) -> StudyReport:
    report = _mapping(value, f"{where}: reports.{name}")
    if sorted(report) != ["rows", "title"]:
        raise ConfigError(f"{where}: reports.{name} takes title and rows, got {sorted(report)}")
    names = _sequence(report["rows"], f"{where}: reports.{name}.rows")
    unknown = [r for r in names if r not in rows]
    if not names or unknown:
        raise ConfigError(f"{where}: reports.{name}.rows must name rows of the study ({', '.join(rows)}), got {names}")
    return StudyReport(name, str(report["title"]), tuple(names))


def _curve(value: Any, where: str) -> Curve:
    curve = _mapping(value, f"{where}: curves")
    if sorted(curve) != ["column", "log"] or not all(isinstance(v, str) for v in curve.values()):
        raise ConfigError(f"{where}: a curve is {{log: <CSV file pattern>, column: <name>}}, got {value!r}")
    return Curve(curve["log"], curve["column"])


def study_folder(study: Study, overrides: Sequence[str] = ()) -> Path:
    """``<output_dir>/<study>-<dataset>-d<embedding size>``: where :func:`run_study` runs ``study``
    with the extra ``overrides`` (the output folder, data set and embedding size as the first row's
    config has them), so that one study at two sizes or on two data sets runs in two folders."""
    from ..spec.compose import load_spec

    spec = load_spec([*study.overrides, *study.rows[0].overrides, *overrides, *study.budget.run_overrides()])
    tag = f"{study.name}-{spec.config['choices']['dataset']}-d{spec.config['embedding_size']}"
    return Path(spec.output_dir).expanduser() / tag


def run_study(
    study: Study,
    overrides: Sequence[str] = (),
    *,
    rows: Sequence[str] | None = None,
    report_dir: str | os.PathLike | None = None,
    storage: str | None = None,
    workers: int = 1,
    seed: int = 0,
    prune: bool = True,
    heartbeat: int = 60,
    search_only: bool = False,
    command: str | None = None,
) -> list[Path]:
    """Search every row of ``study`` on validation, run and test each chosen setting, and write
    the study's reports; resumable.

    Parameters
    ----------
    study : Study
        What :func:`load_study` read.
    overrides : sequence of str
        Overrides added to every row after the study's own (``dataset=folder dataset.root=...``
        runs the study on other data).
    rows : sequence of str, optional
        Run only these rows (and write no report); by default every row, then the reports.
    search_only : bool
        Run each row's trials only (no final runs, no report): what workers on other machines run.
    report_dir : path, optional
        Where the reports go; by default ``<study folder>/report``; a study of several reports
        writes each into a folder of its name there.
    storage : str, optional
        An Optuna storage URL shared by every row (each row is a study named
        ``<study>-<dataset>-d<size>-<row>`` in it); by default one SQLite file per row.
    workers, seed, prune, heartbeat
        As for :func:`~pml_regularizers.bench.search.search.run_search`.
    command : str, optional
        The command that ran the study, for its reports.

    Returns
    -------
    list of Path
        The report folders written.
    """
    from .search import run_search

    folder = study_folder(study, overrides)
    names = [r.name for r in study.rows]
    unknown = [r for r in rows or () if r not in names]
    if unknown:
        raise ConfigError(f"--rows: {', '.join(unknown)} are not rows of study {study.name} ({', '.join(names)})")
    results = {}
    for row in study.rows:
        if rows and row.name not in rows:
            continue
        results[row.name] = run_search(
            row.name,
            [*study.overrides, *row.overrides, *overrides],
            {**study.space, **row.space},
            study.budget,
            folder=folder / row.name,
            storage=storage,
            study_name=f"{folder.name}-{row.name}",
            workers=workers,
            seed=seed,
            prune=prune,
            heartbeat=heartbeat,
            search_only=search_only,
            command=command,
        )
    if rows or search_only:
        return []
    out = Path(report_dir) if report_dir is not None else folder / "report"
    written = []
    for report in study.reports:
        target = out if len(study.reports) == 1 else out / report.name
        _write_study_report(study, report, [results[r] for r in report.rows], target, command)
        written.append(target)
    return written


def _write_study_report(
    study: Study, report: StudyReport, searches: Sequence[Any], out: Path, command: str | None
) -> None:
    from ..results.center_report import center_geometry_section
    from ..results.plots import plot_training_curves
    from ..results.training_logs import VAL_LOG, VAL_MAP_AT_R
    from .report import write_search_report

    title = report.title if report.title != study.title or len(study.reports) > 1 else study.title
    text = write_search_report(searches, out, title, baseline=report.rows[0], command=command)
    lines = ["", f"Study: `{study.source}`.", ""]
    dirs = [s.final for s in searches if s.final is not None]
    if study.center_geometry:
        lines += center_geometry_section(dirs, out)
    validated = study.budget.cv_folds >= 2
    curves = [*([Curve(VAL_LOG, VAL_MAP_AT_R)] if validated else []), *study.curves]
    if not curves:
        (out / "report.md").write_text(text + "\n".join(lines))
        return
    lines += [
        "## Over training (final runs)",
        "",
        "Mean over the training runs (seeds and folds) of each experiment; an experiment that does not "
        "log a column has no line in its plot.",
        "",
    ]
    for curve in curves:
        png = f"curve_{curve.column}.png"
        xlabel = "epoch" if curve.column == VAL_MAP_AT_R else "iteration"
        plot_training_curves(dirs, out / png, curve.column, curve.log, xlabel)
        lines += [f"![{curve.column} over training]({png})", ""]
    (out / "report.md").write_text(text + "\n".join(lines))
