"""The evidence-study driver (experiments/evidence.py) at its tiny size: the search runs only on
validation, the final runs test once with the chosen settings, and the report holds the search,
its budget, the paired test table and the command that made it."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

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
    scores = {p.name: evidence.val_score(p) for p in searches}
    lrs = [point.split("=")[1] for point in evidence.LR_GRID]
    best_lr = max(lrs, key=lambda lr: scores[f"{tag}-baseline-search-lr{lr}"])
    method_cfg = (out / f"{tag}-method" / "config.yaml").read_text()
    assert f"lr: {best_lr}" in method_cfg
    for role in ("baseline", "method"):
        assert splits_of(out / f"{tag}-{role}") == {"val", "test"}
    report = (docs / tag / "report.md").read_text()
    assert "python experiments/evidence.py skewed_mean_proxy_anchor --size tiny" in report
    assert "## Hyperparameter search (validation only)" in report
    assert report.count("| baseline | `optimizer.lr=") == 3
    assert report.count("| method | `regularizer.weight=") == 3
    assert f"Δ: difference to `{tag}-baseline`" in report
    assert (docs / tag / "metrics.png").exists()
    assert "## Over training (final runs)" in report
    for column in ("mean_average_precision_at_r_level0", "skewed_mean"):
        assert f"![{column} over training](curve_{column}.png)" in report
        assert (docs / tag / f"curve_{column}.png").stat().st_size > 0


@pytest.fixture(scope="module")
def sweep(evidence):
    sys.path.insert(0, str(REPO / "experiments"))  # the sweep imports the evidence driver
    spec = importlib.util.spec_from_file_location("skewed_mean_sweep", REPO / "experiments" / "skewed_mean_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(REPO / "experiments"))


@pytest.mark.parametrize("lam", [0.5, 4.0, 16.0])
def test_sweep_proxy_geometry_matches_a_loop_over_pairs(sweep, lam):
    proxies = torch.randn(9, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    unit = proxies / proxies.norm(dim=1, keepdim=True)
    sims = [float(unit[i] @ unit[j]) for i in range(9) for j in range(i + 1, 9)]
    largest, mean, skewed = sweep.proxy_geometry(proxies, lam)
    assert largest == pytest.approx(max(sims), rel=1e-6)
    assert mean == pytest.approx(sum(sims) / len(sims), rel=1e-6, abs=1e-9)
    assert skewed == pytest.approx(math.log(sum(math.exp(lam * s) for s in sims) / len(sims)) / lam, rel=1e-6)


def test_tiny_sweep_runs_every_weight_on_validation_only(sweep, tmp_path):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = ["--size", "tiny", "--out", str(out), "--docs", str(docs), "--cache", str(tmp_path / "cache"),
            "--embedding-size", "8"]
    assert sweep.main(argv) == 0
    runs = sorted(out.iterdir())
    assert len(runs) == len(sweep.WEIGHTS)
    for exp_dir in runs:
        assert splits_of(exp_dir) == {"val"}
    report = (docs / "skewed_mean_sweep-glyphs-d8" / "report.md").read_text()
    assert "python experiments/skewed_mean_sweep.py --size tiny" in report
    assert report.count("pml-bench run ") == len(sweep.WEIGHTS)
    for w in sweep.WEIGHTS:
        assert f"\n| {w:g} | " in report
    assert "| random Gaussian 4×8 |" in report
    assert (docs / "skewed_mean_sweep-glyphs-d8" / "sweep.png").stat().st_size > 0
