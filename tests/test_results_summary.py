"""The results page's summary (``python -m experiments.results_summary``): every number of the
verdict table on ``docs/results.md`` and of ``summary.json`` is the one in its cell's report, the
verdict follows the paired difference's interval, a report not made yet reads "—", and writing the
table changes nothing on the page outside its markers."""

import json
import re
from pathlib import Path

import pytest

from experiments import results_summary as rs
from pml_regularizers.bench import PRIMARY_METRIC, SummaryRow
from pml_regularizers.bench.results.report_data import ExperimentInfo, ReportData, read_report_data, write_report_data

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NUMBERS = re.compile(r"([+−])(\d+\.\d{3}) ± (\d+\.\d{3})")
LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>[^)]+)\)")


def table_cells(page_text: str) -> tuple[list[str], dict[tuple[str, str], str]]:
    """The header and the cells, by (row, header), of the Markdown table between the markers."""
    block = page_text.split(rs.START)[1].split(rs.END)[0].strip().splitlines()

    def split(line: str) -> list[str]:
        return [part.strip() for part in line.strip().strip("|").split("|")]

    header = split(block[0])
    cells = {}
    for line in block[2:]:
        parts = split(line)
        assert len(parts) == len(header), line
        cells.update({(parts[0], h): text for h, text in zip(header[1:], parts[1:])})
    return header, cells


def separated_row(numbers: ReportData, experiment: str) -> SummaryRow:
    (row,) = [
        r for r in numbers.rows if (r.experiment, r.embedding, r.metric) == (experiment, "separated", PRIMARY_METRIC)
    ]
    return row


def compared(diff: float, half: float) -> SummaryRow:
    return SummaryRow("x-method", "test", "separated", PRIMARY_METRIC, 0.5, 0.01, 5, diff, half, 5, "x-baseline")


def test_every_number_of_the_page_table_is_the_one_in_its_report():
    header, cells = table_cells((DOCS / "results.md").read_text(encoding="utf-8"))
    assert header[1:] == [f"{c}, {s}-d" for c in rs.COLUMNS for s in rs.SIZES]
    assert [row for row, h in cells if h == header[1]] == list(rs.ROWS)
    listed = {(c.row, f"{c.column}, {c.size}-d"): c for c in rs.CELLS}
    quoted = 0
    for key, text in cells.items():
        cell = listed.get(key)
        report = DOCS / "results" / cell.report_tag() if cell else None
        if report is None or not (report / "report.json").is_file():
            assert text == "—", key  # no study, or its report is not made yet
            continue
        numbers = read_report_data(report)
        row = separated_row(numbers, cell.experiment(cell.method))
        assert row.baseline == numbers.baseline == cell.experiment(cell.comparator)
        link = LINK.fullmatch(text)
        assert link is not None, (key, text)
        assert (DOCS / link["target"]).resolve() == (report / "report.md").resolve()
        sign, diff, half = NUMBERS.search(link["text"]).groups()
        assert abs((-1 if sign == "−" else 1) * float(diff) - row.diff_mean) <= 0.0005 + 1e-12, key
        assert abs(float(half) - row.diff_half_width) <= 0.0005 + 1e-12, key
        low, high = row.diff_mean - row.diff_half_width, row.diff_mean + row.diff_half_width
        words = "helps by" if low > 0 else "hurts by" if high < 0 else "no measurable effect"
        assert link["text"].startswith(words), key
        quoted += 1
    assert quoted >= 28  # the seven evidence studies' cells at least


def test_summary_json_holds_each_listed_cells_report_numbers():
    data = json.loads((DOCS / "results" / rs.SUMMARY_JSON).read_text())
    assert [(c["row"], c["column"], c["size"], c["report"]) for c in data["cells"]] == [
        (c.row, c.column, c.size, c.report_tag()) for c in rs.CELLS
    ]
    for entry in data["cells"]:
        report = DOCS / "results" / entry["report"]
        assert entry["report_found"] == (report / "report.json").is_file()
        if not entry["report_found"]:
            assert entry["diff"] is entry["half_width"] is entry["baseline_map_at_r"] is entry["verdict"] is None
            continue
        numbers = read_report_data(report)
        base, method = separated_row(numbers, entry["comparator"]), separated_row(numbers, entry["method"])
        assert (entry["baseline_map_at_r"], entry["method_map_at_r"]) == (base.mean, method.mean)
        assert (entry["diff"], entry["half_width"]) == (method.diff_mean, method.diff_half_width)


def test_the_verdict_is_where_the_interval_lies():
    assert rs.cell_text(compared(0.012, 0.005)) == "helps by +0.012 ± 0.005"
    assert rs.cell_text(compared(-0.020, 0.004)) == "hurts by −0.020 ± 0.004"
    assert rs.cell_text(compared(0.003, 0.010)) == "no measurable effect (+0.003 ± 0.010)"
    assert rs.cell_text(compared(-0.003, 0.010)) == "no measurable effect (−0.003 ± 0.010)"
    assert rs.cell_text(compared(0.25, 0.25)).startswith("no measurable effect")  # an interval ending at 0 holds it
    assert rs.cell_text(None) == "—"


def _write_report(
    docs: Path, tag: str, baseline_role: str, rows: dict[str, tuple[float, float]], prefix: str | None = None
) -> None:
    """A report.json (and a report.md) of ``tag`` whose experiments are ``<prefix>-<role>`` (default
    prefix: ``tag``): each role's separated MAP@R and its difference to ``baseline_role``."""
    prefix = prefix or tag
    baseline = f"{prefix}-{baseline_role}"
    summary = [
        SummaryRow(f"{prefix}-{role}", "test", "separated", PRIMARY_METRIC, 0.4, 0.01, 5, *(
            (None, None, 0, None) if role == baseline_role else (diff, half, 5, baseline)
        ))
        for role, (diff, half) in rows.items()
    ]  # fmt: skip
    (docs / tag).mkdir(parents=True)
    experiments = [ExperimentInfo(f"{prefix}-{role}") for role in rows]
    write_report_data(
        ReportData("t", "pml-bench report", "test", baseline, experiments, summary), docs / tag / "report.json"
    )
    (docs / tag / "report.md").write_text("# t\n")


def test_a_report_not_made_reads_as_a_dash(tmp_path):
    docs, page, figure = tmp_path / "results", tmp_path / "results.md", tmp_path / "_static" / "summary.png"
    page.write_text(f"# R\n\n{rs.START}\n{rs.END}\n")
    _write_report(docs, "dvml_triplet-omniglot-d32", "baseline", {"baseline": (0, 0), "method": (-0.02, 0.004)})
    _write_report(
        docs, "regularizer_check_flow_multi_similarity-tiny-d128", "flow",
        {"flow": (0, 0), "jacobian_determinant": (0.03, 0.01), "baseline": (-0.01, 0.02)},
        prefix="regularizer_check_multi_similarity-tiny-d128",  # the flow report compares that family's runs
    )  # fmt: skip
    rs.write_summary(docs, page, figure, check_data="tiny")
    _, cells = table_cells(page.read_text(encoding="utf-8"))
    filled = {
        (rs.DVML_TRIPLET, f"{rs.OMNIGLOT}, 32-d"): "[hurts by −0.020 ± 0.004]"
        "(results/dvml_triplet-omniglot-d32/report.md)",
        (rs.JD_MS, f"{rs.CHECK}, 128-d"): "[helps by +0.030 ± 0.010]"
        "(results/regularizer_check_flow_multi_similarity-tiny-d128/report.md)",
    }
    assert {k: v for k, v in cells.items() if v != "—"} == filled
    assert len(cells) == len(rs.ROWS) * len(rs.COLUMNS) * len(rs.SIZES)
    data = json.loads((docs / rs.SUMMARY_JSON).read_text())
    found = [(c["report"], c["diff"], c["verdict"]) for c in data["cells"] if c["report_found"]]
    assert found == [
        ("regularizer_check_flow_multi_similarity-tiny-d128", 0.03, "helps"),
        ("dvml_triplet-omniglot-d32", -0.02, "hurts"),
    ]
    assert all(c["diff"] is None for c in data["cells"] if not c["report_found"])
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_a_report_whose_baseline_is_not_the_comparator_is_refused(tmp_path):
    docs = tmp_path / "results"
    _write_report(docs, "dvml_triplet-omniglot-d32", "method", {"method": (0, 0), "baseline": (0.01, 0.01)})
    (cell,) = [c for c in rs.CELLS if c.report == "dvml_triplet-omniglot-d32"]
    with pytest.raises(ValueError, match="dvml_triplet-omniglot-d32-baseline must be .* baseline"):
        rs.read_cell(cell, docs)


def test_writing_the_table_leaves_the_rest_of_the_page_byte_identical(tmp_path):
    head = f"# Results\r\n\nÜber «text» before.\n\n{rs.START}".encode()
    tail = f"{rs.END}\n\ntext after\r\nno newline at the end".encode()
    page = tmp_path / "results.md"
    page.write_bytes(head + b"\nan old table\n| a |\n" + tail)
    rs.write_table(page, "| new |\n|---|")
    assert page.read_bytes() == head + b"\n| new |\n|---|\n" + tail
    rs.write_table(page, "| new |\n|---|")
    assert page.read_bytes() == head + b"\n| new |\n|---|\n" + tail
    for broken in ("no markers", f"{rs.END} {rs.START}", f"{rs.START} {rs.START} {rs.END}"):
        with pytest.raises(ValueError, match="must hold"):
            rs.replace_block(broken, "x")
