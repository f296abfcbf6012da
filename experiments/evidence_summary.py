# One table over every finished evidence study: each comparison's test MAP@R and its paired
# difference to the study's baseline, for the separated and the concatenated embeddings.
#
# It reads the numbers of each study's own report, docs/results/<study>-<dataset>-d<size>/report.json
# (written beside the study's report.md once its final runs were done; these are the archived
# evidence reports, made before the studies became pml-bench study files),
# and writes docs/results/evidence_summary/report.md quoting them as those reports print them. It
# needs no experiment folders, so it also runs on a clone that has only the published reports.
# Nothing is trained.
#
# Run (after any evidence study):
#     .venv/bin/python -m experiments.evidence_summary
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from experiments.scripts import script_command
from pml_regularizers.bench import (
    PRIMARY_METRIC,
    REPORT_JSON,
    ReportData,
    SummaryRow,
    provenance_lines,
    read_report_data,
    verdict,
)

EMBEDDINGS = ("separated", "concatenated")
_VERDICTS = {"better": "higher", "worse": "lower", "no clear difference": "no measurable difference"}
# The archived evidence studies whose reports this summary quotes.
STUDIES = (
    "dvml_multi_similarity",
    "dvml_triplet",
    "jacobian_determinant_full_proxy_anchor",
    "jacobian_determinant_multi_similarity",
    "jacobian_determinant_proxy_anchor",
    "jacobian_determinant_square_multi_similarity",
    "jacobian_determinant_square_proxy_anchor",
    "skewed_mean_normalized_softmax",
    "skewed_mean_proxy_anchor",
)
_TAG = re.compile(r"^(?P<study>[a-z_]+)-(?P<data>.+)-d(?P<size>\d+)$")


def study_reports(docs: Path) -> list[tuple[str, str, int, Path]]:
    """``(study, dataset, size, report.json)`` for each evidence study's report under ``docs``,
    sorted by study, dataset and size; other reports (sweeps, the default comparison) are left out."""
    found = []
    for report in docs.glob(f"*/{REPORT_JSON}"):
        match = _TAG.match(report.parent.name)
        if match is not None and match["study"] in STUDIES:
            found.append((match["study"], match["data"], int(match["size"]), report))
    return sorted(found, key=lambda s: (s[0], s[1], s[2]))


def _value(row: SummaryRow | None) -> str:
    return "n/a" if row is None else f"{row.mean:.4f} ± {row.half_width:.4f}"


def _difference(row: SummaryRow | None) -> str:
    if row is None or row.diff_mean is None or row.diff_half_width is None:
        return "n/a"
    return f"{row.diff_mean:+.4f} ± {row.diff_half_width:.4f}"


def _verdict(row: SummaryRow | None) -> str:
    """Where the difference's 95% interval lies: above 0, below 0, or across it."""
    if row is None or row.baseline is None:
        return "n/a"
    return _VERDICTS.get(verdict(row), "n/a")


def summary_rows(tag: str, numbers: ReportData) -> list[tuple[str, dict[str, SummaryRow], dict[str, SummaryRow]]]:
    """For each experiment after the baseline in the test table of study ``tag``'s report ``numbers``:
    its role, and the baseline's and its MAP@R rows by embedding (the others' rows carry the paired
    difference)."""
    if numbers.split != "test":
        raise ValueError(f"the report of study {tag} must summarize the test split, got {numbers.split!r}")
    baseline = f"{tag}-baseline"
    rows = [r for r in numbers.rows if r.metric == PRIMARY_METRIC]
    by = {(r.experiment, r.embedding): r for r in rows}
    base = {e: by[baseline, e] for e in EMBEDDINGS if (baseline, e) in by}
    out = []
    for name in dict.fromkeys(r.experiment for r in rows):
        if name != baseline:
            other = {e: by[name, e] for e in EMBEDDINGS if (name, e) in by}
            out.append((name.removeprefix(f"{tag}-"), base, other))
    return out


def write_summary(docs: Path, command: str) -> str:
    """Write the summary report into ``docs/evidence_summary/report.md`` and return its text."""
    studies = study_reports(docs)
    if not studies:
        raise FileNotFoundError(f"no evidence study report (<study>-<dataset>-d<size>/{REPORT_JSON}) in {docs}")
    lines = [
        "# The evidence at a glance",
        "",
        "Test MAP@R on the held-out classes, mean over seeds ± half-width of the 95% Student-t "
        "interval; Δ is the difference to the study's baseline paired by seed, with its 95% interval. "
        "Each row quotes its study's own report (`docs/results/<study>-<dataset>-d<size>/`), which has "
        "every metric, the search and the plots. `method` is the study's method at the setting its "
        "search chose; `linear` is the linear-embedder comparator of the flow studies (their baseline "
        "is the bare flow). The last column says where the separated Δ's interval lies: above 0 "
        "(higher), below 0 (lower), or across it.",
        "",
        "| study | data | d | compared with the baseline | baseline MAP@R (separated) | its MAP@R (separated) "
        "| Δ separated | Δ concatenated | separated Δ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    for study, data, size, report in studies:
        numbers = read_report_data(report)
        for role, base, other in summary_rows(report.parent.name, numbers):
            sep, cat = other.get("separated"), other.get("concatenated")
            lines.append(
                f"| {study} | {data} | {size} | {role} | {_value(base.get('separated'))} | {_value(sep)} "
                f"| {_difference(sep)} | {_difference(cat)} | {_verdict(sep)} |"
            )
        if numbers.command is not None:
            commands.append(numbers.command)
    lines += ["", *provenance_lines(command, [])]
    if commands:
        lines += ["The study reports it quotes were made by:", "", "```bash", *commands, "```", ""]
    text = "\n".join(lines).rstrip("\n") + "\n"
    report_dir = docs / "evidence_summary"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One table over every finished evidence study.")
    parser.add_argument("--docs", type=Path, default=Path("docs/results"), help="where reports go")
    args = parser.parse_args(argv)
    print(write_summary(args.docs, script_command("experiments.evidence_summary", argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
