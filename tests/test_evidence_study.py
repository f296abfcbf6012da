"""The evidence-study driver (experiments/evidence.py) at its tiny size: the search runs only on
validation, the final runs test once with the chosen settings, and the report holds the search,
its budget, the paired test table and the command that made it."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evidence():
    spec = importlib.util.spec_from_file_location("evidence", REPO / "experiments" / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["evidence"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["evidence"]


def splits_of(exp_dir):
    return {r["split"] for r in json.loads((exp_dir / "results.json").read_text())["records"]}


def test_tiny_study_searches_on_validation_and_tests_the_chosen_configs(evidence, tmp_path, capsys):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = ["skewed_mean_proxy_anchor", "--size", "tiny", "--out", str(out), "--docs", str(docs),
            "--cache", str(tmp_path / "cache"), "--embedding-size", "8"]
    assert evidence.main(argv) == 0
    tag = "skewed_mean_proxy_anchor-glyphs-d8"
    searches = sorted(p for p in out.iterdir() if "-search" in p.name)
    assert len(searches) == len(evidence.LR_GRID) + len(evidence.STUDIES["skewed_mean_proxy_anchor"].method_grid)
    for exp_dir in searches:
        assert splits_of(exp_dir) == {"val"}  # the search never embeds the test classes
        assert not (exp_dir / "seed_100" / "test_embeddings.pt").exists()
    scores = {p.name: evidence._val_score(p) for p in searches}
    best_lr = max(range(3), key=lambda k: scores[f"{tag}-baseline-search{k}"])
    method_cfg = (out / f"{tag}-method" / "config.yaml").read_text()
    assert f"lr: {evidence.LR_GRID[best_lr].split('=')[1]}" in method_cfg
    for role in ("baseline", "method"):
        assert splits_of(out / f"{tag}-{role}") == {"val", "test"}
    report = (docs / tag / "report.md").read_text()
    assert "python experiments/evidence.py skewed_mean_proxy_anchor --size tiny" in report
    assert "## Hyperparameter search (validation only)" in report
    assert report.count("| baseline | `optimizer.lr=") == 3
    assert report.count("| method | `regularizer.weight=") == 3
    assert f"Δ: difference to `{tag}-baseline`" in report
    assert (docs / tag / "metrics.png").exists()
