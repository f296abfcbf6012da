"""``pml-bench study``: the default comparison (``make main``) as a study file, reports pairing each
method with its base loss; a searched study gives every row the same budget, states it and each row's
CPU time, draws the class centers' geometry, and a rerun (or a run after ``--search-only`` workers)
trains nothing twice."""

import json
import re

import pytest

from pml_regularizers.bench.cli import main as cli_main

from .test_search import finished, study_of, tiny

pytestmark = pytest.mark.slow

STUDY = """title: "A tiny study"
overrides: [loss=proxy_anchor]
budget: {trials: 2, epochs: 1, cv_folds: 2, patience: null, final_seeds: 2}
rows:
  baseline: []
  skewed_mean: [regularizer=skewed_mean]
curves:
  - {log: "*_SkewedMeanRegularizer.csv", column: skewed_mean}
center_geometry: true
"""


def test_compare_pairs_each_method_with_its_base_loss(tmp_path, capsys):
    assert cli_main(["study", "compare", *tiny(tmp_path), "--epochs", "1", "--seeds", "1"]) == 0
    printed = capsys.readouterr().out
    folder = tmp_path / "runs" / "compare-glyphs-d8"
    rows = ["proxy_anchor", "skewed_mean", "flow", "jacobian_determinant"]
    rows += ["triplet", "dvml_triplet", "multi_similarity", "dvml_multi_similarity"]
    for row in rows:
        assert (folder / row / "final" / row / "results.json").exists(), row
    groups = {
        "skewed_mean": ["proxy_anchor", "skewed_mean"],
        "jacobian_determinant": ["flow", "jacobian_determinant", "proxy_anchor"],
        "dvml_triplet": ["triplet", "dvml_triplet"],
        "dvml_multi_similarity": ["multi_similarity", "dvml_multi_similarity"],
    }
    blocks = re.split(r"\n\n(?=Default comparison: )", printed[printed.index("Default comparison: ") :].strip())
    assert [b.splitlines()[0] for b in blocks] == [f"Default comparison: {g}" for g in groups]
    for block, (group, members) in zip(blocks, groups.items()):
        report = folder / "report" / group
        assert block.splitlines()[-1] == f"full report: {report / 'report.md'}"
        data = json.loads((report / "report.json").read_text())
        assert data["title"] == f"Default comparison: {group}"
        assert [s["name"] for s in data["searches"]] == members
        assert {json.dumps(s["budget"], sort_keys=True) for s in data["searches"]} == {
            json.dumps({"trials": 0, "epochs": 1, "cv_folds": 0, "patience": None, "final_seeds": 1}, sort_keys=True)
        }
        text = (report / "report.md").read_text()
        assert f"Δ: difference to `{members[0]}` paired by seed" in text
        assert "## Budget" in text and "## Search" not in text
        for member in members:
            assert re.search(rf"^\| {member} \| \d+ s \(\d+ s\) \|$", text, re.MULTILINE), member


def test_a_searched_study_gives_every_row_one_budget_and_resumes(tmp_path, capsys):
    path = tmp_path / "tiny_study.yaml"
    path.write_text(STUDY)
    args = ["study", str(path), *tiny(tmp_path)]
    folder = tmp_path / "runs" / "tiny_study-glyphs-d8"
    # a worker on another machine: trials of one row only, no final runs, no report
    assert cli_main([*args, "--rows", "skewed_mean", "--search-only"]) == 0
    assert len(finished(study_of(folder / "skewed_mean", "tiny_study-glyphs-d8-skewed_mean"))) == 2
    assert not (folder / "skewed_mean" / "final").exists() and not (folder / "baseline").exists()
    assert not (folder / "report").exists()
    searched = {
        t.number: t.datetime_complete
        for t in study_of(folder / "skewed_mean", "tiny_study-glyphs-d8-skewed_mean").trials
    }

    assert cli_main(args) == 0
    data = json.loads((folder / "report" / "report.json").read_text())
    searches = {s["name"]: s for s in data["searches"]}
    assert list(searches) == ["baseline", "skewed_mean"]
    assert searches["baseline"]["budget"] == searches["skewed_mean"]["budget"] == {
        "trials": 2, "epochs": 1, "cv_folds": 2, "patience": None, "final_seeds": 2,
    }  # fmt: skip
    assert set(searches["baseline"]["space"]) == {"optimizer.lr", "optimizer.loss_lr"}
    assert set(searches["skewed_mean"]["space"]) == {
        "optimizer.lr", "optimizer.loss_lr", "regularizer.weight", "regularizer.lam",
    }  # fmt: skip
    for name, search in searches.items():
        assert len([t for t in search["trials"] if t["state"] in ("COMPLETE", "PRUNED")]) == 2, name
        assert search["search_cpu_seconds"] > 0 and search["final_cpu_seconds"] > 0, name
        records = json.loads((folder / name / "final" / name / "results.json").read_text())["records"]
        assert {r["seed"] for r in records if r["split"] == "test"} == {0, 1}
    # the worker's trials were kept, not run again
    trials = study_of(folder / "skewed_mean", "tiny_study-glyphs-d8-skewed_mean").trials
    assert {t.number: t.datetime_complete for t in trials} == searched
    text = (folder / "report" / "report.md").read_text()
    assert "## Search (validation only)" in text and "## The class centers' geometry" in text
    assert "Study: `" in text and (folder / "report" / "center_geometry.png").stat().st_size > 0
    assert (folder / "report" / "curve_skewed_mean.png").stat().st_size > 0
    epochs = json.loads((folder / "report" / "trained_epochs.json").read_text())
    assert sorted(epochs) == ["baseline", "skewed_mean"] and all(len(runs) == 4 for runs in epochs.values())
    assert "## Epochs trained (final runs)" in text and text.count("| 4 of 4 (cap 1) |") == 2

    # a rerun trains nothing: same trials, same final runs
    finals = {name: (folder / name / "final" / name / "results.json").stat().st_mtime_ns for name in searches}
    assert cli_main(args) == 0
    for name in searches:
        assert len(study_of(folder / name, f"tiny_study-glyphs-d8-{name}").trials) == 2, name
        assert (folder / name / "final" / name / "results.json").stat().st_mtime_ns == finals[name], name
