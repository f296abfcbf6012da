"""report.json: write_report writes the numbers of report.md as standard JSON beside it, and
reading it back gives the summary rows at full precision."""

import json
import math

import pytest

from pml_regularizers.bench import SummaryRow, summarize, validation_curves, write_report
from pml_regularizers.bench.results.report_data import (
    ExperimentInfo,
    ReportData,
    ValidationCurve,
    read_report_data,
    write_report_data,
)

from .report_records import MAP, P1, fake_records, write_experiment, write_val_log


def _exact(row):
    """Every field of ``row``, nan as a string so that equal rows compare equal."""
    return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in vars(row).values())


def _refuse_non_standard(name):
    raise ValueError(f"report.json holds {name}, which is not standard JSON")


@pytest.mark.parametrize("split", ["test", "val"])
def test_report_json_round_trips_the_summary_rows(tmp_path, split):
    recs = fake_records()
    # "lone": one seed (undefined half-widths), none shared with the baseline, an unknown metric;
    # "one": one seed shared with the baseline (a difference with an undefined half-width)
    recs.append(
        {
            "experiment": "lone",
            "seed": 7,
            "split": split,
            "embedding": "concatenated",
            "metrics": {MAP: 0.3, P1: 0.5, "my_metric": 0.125},
        }
    )
    recs.append(
        {"experiment": "one", "seed": 1, "split": split, "embedding": "concatenated", "metrics": {MAP: 0.45, P1: 0.7}}
    )
    names = ("base", "reg", "lone", "one")
    dirs = [
        write_experiment(
            tmp_path,
            name,
            [r for r in recs if r["experiment"] == name],
            command=f"pml-bench run experiment={name}",
            device="cpu" if name != "lone" else None,
        )
        for name in names
    ]
    write_val_log(dirs[1], 0, 0, [0.5, 0.7])
    out = tmp_path / "report"
    text = write_report(dirs, out, baseline="base", split=split, title="A title", command="pml-bench report x")
    assert "| lone | concatenated | 1 | 0.3000 ± n/a (Δ n/a: no shared seed) |" in text
    assert "| – |" in text  # the unknown metric is missing for the others

    raw = (out / "report.json").read_text()
    json.loads(raw, parse_constant=_refuse_non_standard)  # null, not NaN, for undefined numbers
    data = read_report_data(out)
    expected = summarize(recs, baseline="base", split=split)
    assert [_exact(r) for r in data.rows] == [_exact(r) for r in expected]  # full precision, every field
    one = next(r for r in data.rows if r.experiment == "one" and r.metric == MAP)
    base_seed_1 = 0.42 if split == "test" else 0.99
    assert one.diff_mean == pytest.approx(0.45 - base_seed_1) and math.isnan(one.diff_half_width)
    assert all(r.diff_mean is None and r.diff_half_width is None for r in data.rows if r.experiment == "base")
    assert (data.title, data.command, data.split, data.baseline, data.source) == (
        "A title",
        "pml-bench report x",
        split,
        "base",
        None,
    )
    assert data.experiments == [
        ExperimentInfo(name, f"pml-bench run experiment={name}", "cpu" if name != "lone" else None) for name in names
    ]
    assert data.validation_curves == validation_curves(dirs) == [ValidationCurve("reg", [1.0, 2.0], [0.5, 0.7], 1)]
    assert "source" not in json.loads(raw)
    assert read_report_data(out / "report.json") == data  # the file or its folder


def test_report_json_without_records_of_the_split(tmp_path):
    exp = write_experiment(tmp_path, "a", [r for r in fake_records() if r["experiment"] == "base"])
    text = write_report([exp], tmp_path / "report", split="other")
    assert "No other records found." in text
    data = read_report_data(tmp_path / "report")
    assert data.rows == [] and data.baseline is None and data.experiments == [ExperimentInfo("a")]


def test_report_data_keeps_a_source_and_undefined_values(tmp_path):
    row = SummaryRow("e", "test", "single", MAP, 0.5, math.nan, 1, 0.25, math.nan, 1, "b")
    curve = ValidationCurve("e", [1.0, 2.0], [math.nan, 0.5], 2)
    data = ReportData(
        "t",
        None,
        "test",
        "b",
        [ExperimentInfo("b"), ExperimentInfo("e")],
        [row],
        [curve],
        source="converted from report.md (values rounded to 4 decimals)",
    )
    write_report_data(data, tmp_path / "report.json")
    raw = json.loads((tmp_path / "report.json").read_text())
    assert raw["source"] == "converted from report.md (values rounded to 4 decimals)"
    assert (raw["rows"][0]["half_width"], raw["rows"][0]["diff_half_width"]) == (None, None)
    assert raw["validation_curves"][0]["values"] == [None, 0.5]
    back = read_report_data(tmp_path)
    assert back.source == data.source and _exact(back.rows[0]) == _exact(row)
    assert math.isnan(back.validation_curves[0].values[0]) and back.validation_curves[0].values[1] == 0.5


def test_read_report_data_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.json"):
        read_report_data(tmp_path)
    path = tmp_path / "report.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path} is not valid JSON"):
        read_report_data(path)
    path.write_text(json.dumps({"title": "t", "rows": []}))
    with pytest.raises(ValueError, match=f"{path} is not a report's data"):
        read_report_data(tmp_path)
