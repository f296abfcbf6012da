"""The terminal summary of reports: method names, the verdict at its edges, the compact table's
numbers against scipy's t-interval, and what `pml-bench report` prints (`pml-bench study` prints the
same for each of its reports: tests/bench/test_study.py)."""

import math
import re

import numpy as np
import pytest
from scipy import stats

from pml_regularizers.bench import SummaryRow, cli, summarize, verdict
from pml_regularizers.bench.results.terminal_summary import compact_table, method_name

from .report_records import BASE_MAP, MAP, P1, REG_MAP, fake_records, write_experiment


def interval(values):
    """Mean and 95% Student-t half-width, computed here from scipy's t distribution."""
    x = np.asarray(values, dtype=float)
    return x.mean(), stats.t.interval(0.95, len(x) - 1, loc=0, scale=stats.sem(x))[1]


def cells(table):
    """The table's lines cut at the header's column starts (which the rows must share)."""
    lines = table.splitlines()
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", lines[0])]
    return [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])] for line in lines]


def row(diff_mean, diff_half_width, baseline="base"):
    return SummaryRow("m", "test", "single", MAP, 0.5, 0.1, 3, diff_mean, diff_half_width, 3, baseline)


@pytest.mark.parametrize(
    "diff, half, expected",
    [
        (0.5, 0.4999, "better"),
        (0.5, 0.5, "no clear difference"),  # the interval ends at 0: it holds 0
        (-0.5, 0.5, "no clear difference"),
        (-0.5, 0.4999, "worse"),
        (0.0, 0.0, "no clear difference"),
        (0.3, math.nan, "not enough seeds"),  # one shared seed: no interval
        (None, None, "no shared seed"),
    ],
)
def test_verdict_at_its_edges(diff, half, expected):
    assert verdict(row(diff, half)) == expected


def test_verdict_needs_a_compared_row():
    with pytest.raises(ValueError, match="baseline"):
        verdict(row(None, None, baseline=None))


@pytest.mark.parametrize(
    "experiment, baseline, expected",
    [
        ("glyphs-proxy_anchor-skewed_mean-linear", "glyphs-proxy_anchor-linear", "skewed_mean"),
        ("glyphs-proxy_anchor-jacobian_determinant-flow", "glyphs-proxy_anchor-flow", "jacobian_determinant"),
        ("glyphs-proxy_anchor-linear", "glyphs-proxy_anchor-flow", "linear"),
        ("glyphs-triplet-triplet_margin-dvml-dvml", "glyphs-triplet-triplet_margin-linear", "dvml-dvml"),
        ("study-glyphs-n10-d32-method", "study-glyphs-n10-d32-baseline", "method"),
        ("a-b-b", "a-b", "b"),
        ("a-c", "a-b-c", "a-c"),  # nothing of its own left: the whole name
        ("other", "base", "other"),
    ],
)
def test_method_name_is_what_differs_from_the_baseline(experiment, baseline, expected):
    assert method_name(experiment, baseline) == expected


def test_compact_table_numbers_against_scipy():
    table = cells(compact_table(summarize(fake_records(), baseline="base")))
    assert table[0] == ["method", "seeds", "MAP@R", "Δ MAP@R", "P@1", "Δ P@1", "verdict (MAP@R)"]
    base_p1 = [0.6 + s / 100 for s in BASE_MAP]
    reg_p1 = [0.6 + s / 100 for s in REG_MAP]
    shared = [s for s in REG_MAP if s in BASE_MAP]
    expected_base = [
        "baseline",
        "3",
        "{:.4f} ± {:.4f}".format(*interval(list(BASE_MAP.values()))),
        "",
        "{:.4f} ± {:.4f}".format(*interval(base_p1)),
        "",
        "",
    ]
    diff_map = interval([REG_MAP[s] - BASE_MAP[s] for s in shared])  # 0.0267 ± 0.0143
    assert diff_map[0] - diff_map[1] > 0
    expected_reg = [
        "reg",
        "4",
        "{:.4f} ± {:.4f}".format(*interval(list(REG_MAP.values()))),
        "{:+.4f} ± {:.4f} (3 pairs)".format(*diff_map),
        "{:.4f} ± {:.4f}".format(*interval(reg_p1)),
        "+0.0000 ± 0.0000 (3 pairs)",
        "better",
    ]
    assert table[1:] == [expected_base, expected_reg]
    assert table[2][3] == "+0.0267 ± 0.0143 (3 pairs)"


def test_compact_table_single_seed_no_shared_seed_embeddings_and_no_baseline():
    recs = fake_records()
    recs += [
        {"experiment": "one", "seed": 1, "split": "test", "embedding": "concatenated", "metrics": {MAP: 0.45, P1: 0.7}},
        {"experiment": "far", "seed": 9, "split": "test", "embedding": "concatenated", "metrics": {MAP: 0.1}},
        {"experiment": "far", "seed": 9, "split": "test", "embedding": "separated", "metrics": {MAP: 0.2}},
    ]
    table = cells(compact_table(summarize(recs, baseline="base")))
    assert table[0][:3] == ["method", "embedding", "seeds"]
    by_name = {(line[0], line[1]): line for line in table[1:]}
    assert by_name["one", "concatenated"][3:] == [
        "0.4500 ± n/a",
        "+0.0300 ± n/a",
        "0.7000 ± n/a",
        "+0.0900 ± n/a",
        "not enough seeds",
    ]
    assert by_name["far", "separated"][3:] == ["0.2000 ± n/a", "n/a", "–", "", "no shared seed"]
    assert ("base", "separated") not in by_name  # the baseline has no separated records
    plain = cells(compact_table(summarize(recs)))
    assert plain[0] == ["method", "embedding", "seeds", "MAP@R", "P@1"]
    assert [line[0] for line in plain[1:]] == ["base", "reg", "one", "far", "far"]


def test_compact_table_other_metrics_and_errors():
    recs = [{"experiment": "a", "seed": 0, "split": "test", "embedding": "single", "metrics": {"NMI": 0.5}}]
    assert cells(compact_table(summarize(recs)))[0] == ["method", "seeds", "NMI"]  # neither MAP@R nor P@1
    assert compact_table([]) == ""
    rows = [row(0.1, 0.05, "b1"), row(0.1, 0.05, "b2")]
    with pytest.raises(ValueError, match="one baseline"):
        compact_table(rows)


def test_pml_bench_report_prints_the_compact_table(tmp_path, capsys):
    recs = fake_records()
    dirs = [str(write_experiment(tmp_path, n, [r for r in recs if r["experiment"] == n])) for n in ("base", "reg")]
    out = tmp_path / "out"
    assert cli.main(["report", *dirs, "--baseline", "base", "--out", str(out), "--title", "My check"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0] == "My check"
    assert lines[1] == (
        "test split: mean over seeds ± half-width of the 95% Student-t interval; Δ: difference to base, paired by seed"
    )
    assert "\n".join(lines[3:6]) == compact_table(summarize(recs, baseline="base"))
    assert lines[-1] == f"full report: {out / 'report.md'}"
    assert "![" not in printed and "| Experiment |" not in printed  # the Markdown stays in the file
    assert (out / "report.json").exists()
