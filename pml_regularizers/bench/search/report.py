"""The report of one or more searches: the benchmark report of their final runs
(:func:`~pml_regularizers.bench.results.report.write_report`), a section on the searches (budget,
chosen setting, trials, time), and for each search a page ``search-<name>.md`` with Optuna's
optimisation history, parameter importances and a slice plot per parameter (matplotlib PNGs beside
it) and the table of its trials. ``report.json`` gains the searches as data (its ``searches`` key).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ..results.report import write_report
from ..results.report_data import REPORT_JSON, read_report_data, write_report_data
from ..results.trained_epochs import trained_epochs_section
from .budget import SearchBudget
from .search import SearchResult

__all__ = ["write_search_report"]

LOGGER = logging.getLogger(__name__)
TARGET = "validation MAP@R"


def write_search_report(
    searches: Sequence[SearchResult],
    out_dir: str | os.PathLike,
    title: str,
    baseline: str | None = None,
    command: str | None = None,
) -> str:
    """Write the report of ``searches`` into ``out_dir``: ``report.md``, ``report.json``, the
    figures, ``trained_epochs.json`` (how long each final run trained), and a ``search-<name>.md``
    page for each search that searched.

    Parameters
    ----------
    searches : sequence of SearchResult
        What :func:`~pml_regularizers.bench.search.search.run_search` returned for each config, in
        the report's order; their final runs' experiment names must differ.
    out_dir : path
        The report's folder (created if missing).
    title : str
        The report's heading.
    baseline : str, optional
        The final experiment the others are paired with, by seed.
    command : str, optional
        The command that made the searches.

    Returns
    -------
    str
        The text of ``report.md``.
    """
    out = Path(out_dir)
    finals = [s.final for s in searches if s.final is not None]
    if len(finals) < len(searches):
        raise ValueError("a search's report needs its final runs; one of the searches ran with search_only")
    text = write_report(finals, out, baseline=baseline, title=title, command=command)
    lines = ["", *_search_section(searches, out), *trained_epochs_section(finals, out)]
    text += "\n".join(lines)
    (out / "report.md").write_text(text)
    data = read_report_data(out / REPORT_JSON)
    data.searches = [s.to_json() for s in searches]
    write_report_data(data, out / REPORT_JSON)
    return text


def _search_section(searches: Sequence[SearchResult], out: Path) -> list[str]:
    searched = any(s.budget.trials for s in searches)
    budgets = {s.budget for s in searches}
    lines = ["## Search (validation only)" if searched else "## Budget", ""]
    for budget in budgets:
        names = ", ".join(s.name for s in searches if s.budget == budget)
        which = "" if len(budgets) == 1 else f" ({names})"
        lines += [f"Budget{which}: {_budget_text(budget)}", ""]
    if not searched:
        lines += ["| config | CPU (wall) |", "|---|---|"]
        lines += [
            f"| {s.name} | {_duration(s.final_cpu_seconds)} ({_duration(s.final_wall_seconds)}) |" for s in searches
        ]
        return [*lines, ""]
    lines += [
        "Each trial trains on class-disjoint folds of the training classes and is scored by its best "
        "validation MAP@R averaged over them; the test classes are not read until the chosen setting's "
        "final runs, which are tested once. Times are summed over the trials and runs, CPU time including "
        "the data-loading processes.",
        "",
        "| config | chosen setting | validation MAP@R | trials (complete / pruned / failed) "
        "| epochs trained | search CPU (wall) | final runs CPU (wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in searches:
        states = [t.state for t in s.trials]
        counts = " / ".join(str(states.count(state)) for state in ("COMPLETE", "PRUNED", "FAIL"))
        setting = " ".join(f"`{_setting(o)}`" for o in s.best_overrides) or "(as configured)"
        page = _search_page(s, out) if s.trials else None
        name = f"[{s.name}]({page})" if page else s.name
        value = "–" if s.best_value is None else f"{s.best_value:.4f}"
        lines.append(
            f"| {name} | {setting} | {value} | {counts if s.trials else '–'} | {sum(t.epochs for t in s.trials)} "
            f"| {_duration(s.search_cpu_seconds)} ({_duration(s.search_wall_seconds)}) "
            f"| {_duration(s.final_cpu_seconds)} ({_duration(s.final_wall_seconds)}) |"
        )
    lines.append("")
    for s in searches:
        if s.edges:
            lines += [
                f"**{s.name}** chose {', '.join(f'`{k}`' for k in s.edges)} at an edge of its range: "
                "the best value may lie outside it; widen the range and search again.",
                "",
            ]
    return lines


def _budget_text(budget: SearchBudget) -> str:
    epochs = f"at most {budget.epochs} epoch{'s' if budget.epochs > 1 else ''}"
    where = f"on each of {budget.cv_folds} class-disjoint folds" if budget.cv_folds else "on the training classes"
    patience = "" if budget.patience is None else f", stopped after {budget.patience} epochs without gain"
    seeds = f"{budget.final_seeds} seed{'s' if budget.final_seeds > 1 else ''}, each tested once"
    if not budget.trials:
        return f"no search; every config runs as configured, {epochs} {where}{patience}, {seeds}."
    return (
        f"{budget.trials} trials (Optuna's TPE sampler, seeded, and median pruner), each {epochs} {where}"
        f"{patience}; the chosen setting trains {seeds}."
    )


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def _setting(override: str) -> str:
    """An override with a float value shown to 4 significant digits."""
    key, _, value = override.partition("=")
    try:
        return f"{key}={float(value):.4g}" if "." in value or "e" in value else override
    except ValueError:
        return override


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _search_page(search: SearchResult, out: Path) -> str:
    """Write ``search-<name>.md`` and its figures; its file name."""
    slug = _slug(search.name)
    figures = _plots(search, out, slug)
    lines = [
        f"# Search: {search.name}",
        "",
        f"Budget: {_budget_text(search.budget)} Storage: `{search.storage}`.",
        "",
        "| key | range | chosen |",
        "|---|---|---|",
    ]
    chosen = dict(o.split("=", 1) for o in search.best_overrides)
    for key, expression in search.space.items():
        edge = " (at an edge)" if key in search.edges else ""
        value = _setting(f"{key}={chosen[key]}").partition("=")[2] if key in chosen else "–"
        lines.append(f"| `{key}` | `{expression}` | {value}{edge} |")
    lines.append("")
    for caption, file_name in figures:
        lines += [f"![{caption}]({file_name})", ""]
    keys = list(search.space)
    lines += [
        "## Trials",
        "",
        "The budget counts the first trials to finish (complete or pruned), by number; the best "
        "complete one among them is chosen. A pruned trial's value is its last reported one. Each trial "
        "is an experiment folder in `trials/` beside the study (`pml-bench report FOLDER --split val` "
        "reports a complete one).",
        "",
        "| trial | state | validation MAP@R | epochs | CPU s | counted | folder | "
        + " | ".join(f"`{k}`" for k in keys)
        + " |",
        "|---" * (7 + len(keys)) + "|",
    ]
    for t in search.trials:
        value = "–" if t.value is None else f"{t.value:.4f}"
        params = " | ".join(_param(t.params.get(k)) for k in keys)
        lines.append(
            f"| {t.number} | {t.state} | {value} | {t.epochs} | {t.cpu_seconds:.0f} | "
            f"{'yes' if t.counted else ''} | {Path(t.folder).name if t.folder else '–'} | {params} |"
        )
    file_name = f"search-{slug}.md"
    (out / file_name).write_text("\n".join(lines) + "\n")
    return file_name


def _param(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plots(search: SearchResult, out: Path, slug: str) -> list[tuple[str, str]]:
    """Optuna's optimisation history, parameter importances and slice plots of the search's study,
    as PNG files in ``out``; ``(caption, file name)`` of each written."""
    import optuna
    from matplotlib import pyplot
    from optuna.visualization import matplotlib as optuna_plots

    if search.storage is None or search.study_name is None:
        return []
    study = optuna.load_study(study_name=search.study_name, storage=search.storage)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    figures: list[tuple[str, str, Any]] = [
        ("optimisation history", "history", lambda: optuna_plots.plot_optimization_history(study, target_name=TARGET)),
    ]
    if len(complete) >= 2 and len(search.space) >= 2:
        figures.append(("parameter importances", "importances", lambda: optuna_plots.plot_param_importances(study)))
    for key in search.space:
        slice_plot = partial(optuna_plots.plot_slice, study, [key], target_name=TARGET)
        figures.append((f"slice: {key}", f"slice-{_slug(key)}", slice_plot))
    written = []
    for caption, suffix, plot in figures:
        file_name = f"search-{slug}-{suffix}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot()
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.savefig(out / file_name, dpi=100, bbox_inches="tight")
            pyplot.close(figure)
        except (ValueError, RuntimeError) as err:  # too few trials for a figure costs that figure
            LOGGER.warning("search %s: no %s figure (%s)", search.name, caption, err)
            continue
        written.append((caption, file_name))
    return written
