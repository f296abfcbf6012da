# One table over every finished evidence study: each comparison's test MAP@R and its paired
# difference to the study's baseline, for the separated and the concatenated embeddings.
#
# It reads the final experiment folders that experiments/evidence.py made (runs/evidence/<study>-
# <dataset>-d<size>-baseline, -method and each extra comparator) and writes
# docs/results/evidence_summary/report.md. A study appears once its baseline and at least one other
# final experiment have test records; a missing comparator is left out. Nothing is trained.
#
# Run (after any evidence study):
#     .venv/bin/python experiments/evidence_summary.py
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from evidence import PRIMARY, STUDIES, script_command
from pml_regularizers.bench.report import (
    SummaryRow,
    experiment_command,
    load_records,
    provenance_lines,
    summarize,
)

EMBEDDINGS = ("separated", "concatenated")
_TAG = re.compile(r"^(?P<study>[a-z_]+)-(?P<data>.+)-d(?P<size>\d+)-baseline$")


def finished(exp_dir: Path) -> bool:
    """Whether ``exp_dir`` holds results with test records."""
    return (exp_dir / "results.json").is_file() and any(r["split"] == "test" for r in load_records(exp_dir))


def study_folders(out: Path) -> list[tuple[str, str, int, list[Path]]]:
    """``(study, dataset, size, [baseline, other...])`` for each finished study under ``out``,
    sorted by study, dataset and size; the others are the method, then the study's extras."""
    found = []
    for baseline in sorted(out.glob("*-baseline")):
        match = _TAG.match(baseline.name)
        if match is None or match["study"] not in STUDIES or not finished(baseline):
            continue
        tag = baseline.name.removesuffix("-baseline")
        roles = ["method", *STUDIES[match["study"]].extra]
        others = [out / f"{tag}-{role}" for role in roles if finished(out / f"{tag}-{role}")]
        if others:
            found.append((match["study"], match["data"], int(match["size"]), [baseline, *others]))
    return sorted(found, key=lambda s: (s[0], s[1], s[2]))


def _value(row: SummaryRow | None) -> str:
    return "n/a" if row is None else f"{row.mean:.4f} ± {row.half_width:.4f}"


def _difference(row: SummaryRow | None) -> str:
    if row is None or row.diff_mean is None or row.diff_half_width is None:
        return "n/a"
    return f"{row.diff_mean:+.4f} ± {row.diff_half_width:.4f}"


def _verdict(row: SummaryRow | None) -> str:
    """Where the difference's 95% interval lies: above 0, below 0, or across it."""
    if row is None or row.diff_mean is None or row.diff_half_width is None or math.isnan(row.diff_half_width):
        return "n/a"
    if row.diff_mean - row.diff_half_width > 0:
        return "higher"
    if row.diff_mean + row.diff_half_width < 0:
        return "lower"
    return "no measurable difference"


def summary_rows(dirs: list[Path]) -> list[tuple[str, dict[str, SummaryRow], dict[str, SummaryRow]]]:
    """For each experiment after the baseline: its role, and the baseline's and its MAP@R rows by
    embedding (the others' rows carry the paired difference)."""
    baseline = dirs[0].name
    rows = summarize([r for d in dirs for r in load_records(d)], baseline=baseline, split="test")
    by = {(r.experiment, r.embedding): r for r in rows if r.metric == PRIMARY}
    tag = baseline.removesuffix("-baseline")
    base = {e: by[baseline, e] for e in EMBEDDINGS if (baseline, e) in by}
    out = []
    for d in dirs[1:]:
        other = {e: by[d.name, e] for e in EMBEDDINGS if (d.name, e) in by}
        out.append((d.name.removeprefix(f"{tag}-"), base, other))
    return out


def write_summary(out: Path, docs: Path, command: str) -> str:
    """Write the summary report into ``docs/evidence_summary/report.md`` and return its text."""
    studies = study_folders(out)
    if not studies:
        raise FileNotFoundError(f"no finished evidence study (a *-baseline folder with test records) in {out}")
    lines = [
        "# The evidence at a glance",
        "",
        "Test MAP@R on the held-out classes, mean over seeds ± half-width of the 95% Student-t "
        "interval; Δ is the difference to the study's baseline paired by seed, with its 95% interval. "
        "Each study's own report (`docs/results/<study>-<dataset>-d<size>/`) has every metric, the "
        "search and the plots. `method` is the study's method at the setting its search chose; "
        "`linear` is the linear-embedder comparator of the flow studies (their baseline is the bare "
        "flow). The last column says where the separated Δ's interval lies: above 0 (higher), "
        "below 0 (lower), or across it.",
        "",
        "| study | data | d | compared with the baseline | baseline MAP@R (separated) | its MAP@R (separated) "
        "| Δ separated | Δ concatenated | separated Δ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for study, data, size, dirs in studies:
        for role, base, other in summary_rows(dirs):
            sep, cat = other.get("separated"), other.get("concatenated")
            lines.append(
                f"| {study} | {data} | {size} | {role} | {_value(base.get('separated'))} | {_value(sep)} "
                f"| {_difference(sep)} | {_difference(cat)} | {_verdict(sep)} |"
            )
    commands = [c for *_, dirs in studies for d in dirs if (c := experiment_command(d))]
    lines += ["", *provenance_lines(command, commands)]
    text = "\n".join(lines).rstrip("\n") + "\n"
    report_dir = docs / "evidence_summary"
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One table over every finished evidence study.")
    parser.add_argument("--out", type=Path, default=Path("runs/evidence"), help="experiment folders")
    parser.add_argument("--docs", type=Path, default=Path("docs/results"), help="where reports go")
    args = parser.parse_args(argv)
    print(write_summary(args.out, args.docs, script_command("experiments/evidence_summary.py", argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
