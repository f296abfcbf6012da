"""The evidence summary (``python -m experiments.evidence_summary``) over the archived evidence
reports: it rebuilds the published summary from the reports' report.json alone, each row quotes its
study's own report, and its verdict is where the full-precision interval lies."""

import json
import shutil
from pathlib import Path

import pytest

from experiments import evidence_summary as summary
from pml_regularizers.bench import PRIMARY_METRIC, read_report_data

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
TAG = "jacobian_determinant_proxy_anchor-glyphs-n10-d32"


def _copy_reports(docs: Path) -> None:
    for _, _, _, report in summary.study_reports(RESULTS):
        (docs / report.parent.name).mkdir(parents=True)
        shutil.copy2(report, docs / report.parent.name / "report.json")


def test_summary_rebuilds_the_published_one_from_report_json_alone(tmp_path):
    with pytest.raises(FileNotFoundError, match="no evidence study report"):
        summary.write_summary(tmp_path, "python -m experiments.evidence_summary")
    _copy_reports(tmp_path)
    (tmp_path / "skewed_mean_sweep-glyphs-n6-d8").mkdir()  # not a study: left out, its report.json unread
    (tmp_path / "skewed_mean_sweep-glyphs-n6-d8" / "report.json").write_text("{}")
    text = summary.write_summary(tmp_path, "python -m experiments.evidence_summary")
    assert text == (tmp_path / "evidence_summary" / "report.md").read_text()
    published = (RESULTS / "evidence_summary" / "report.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) > 2 and table == [line for line in published.splitlines() if line.startswith("| ")]


def test_each_row_quotes_its_report_and_its_verdict_follows_the_interval(tmp_path):
    _copy_reports(tmp_path)
    text = summary.write_summary(tmp_path, "python -m experiments.evidence_summary")
    study_report = (RESULTS / TAG / "report.md").read_text()
    numbers = read_report_data(RESULTS / TAG)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| jacobian_determinant_proxy_anchor |")]
    rows = [r for r in rows if (r[1], r[2]) == ("glyphs-n10", "32")]
    assert [r[3] for r in rows] == ["method", "linear"]
    for row in rows:
        table_row = next(
            line for line in study_report.splitlines() if line.startswith(f"| {TAG}-{row[3]} | separated |")
        )
        assert f"{row[5]} (Δ {row[6]})" in table_row
        (sep,) = [
            r
            for r in numbers.rows
            if (r.experiment, r.embedding, r.metric) == (f"{TAG}-{row[3]}", "separated", PRIMARY_METRIC)
        ]
        low, high = sep.diff_mean - sep.diff_half_width, sep.diff_mean + sep.diff_half_width
        assert row[8].rstrip(" |") == ("higher" if low > 0 else "lower" if high < 0 else "no measurable difference")


def test_a_comparator_missing_from_report_json_is_left_out(tmp_path):
    (tmp_path / TAG).mkdir()
    data = json.loads((RESULTS / TAG / "report.json").read_text())
    data["rows"] = [r for r in data["rows"] if r["experiment"] != f"{TAG}-linear"]
    (tmp_path / TAG / "report.json").write_text(json.dumps(data))
    text = summary.write_summary(tmp_path, "python -m experiments.evidence_summary")
    assert [line.split(" | ")[3] for line in text.splitlines() if line.startswith("| jacobian")] == ["method"]
