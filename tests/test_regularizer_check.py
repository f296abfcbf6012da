"""The regularizer check (``python -m experiments.regularizer_check``) at its tiny size: every row's
configs compose, the search runs on validation only, each method runs at its base's chosen learning
rate, the reports pair each row with its base, and the class centers' geometry and the budget are
recorded."""

import json

import pytest
from omegaconf import OmegaConf

from experiments import regularizer_check as check
from experiments.evidence import val_score
from pml_regularizers.bench import (
    GEOMETRY_KEYS,
    ExperimentFolder,
    load_spec,
    read_checkpoint,
    read_geometry,
    read_report_data,
)


def test_every_row_composes_its_configs():
    for family, roles in check.FAMILIES.items():
        for role_name, role in roles.items():
            for point in role.grid:
                overrides = [*role.fixed, *point]
                spec = load_spec(overrides)
                config = OmegaConf.create(spec.config)
                for key, value in (o.split("=", 1) for o in overrides):
                    got = spec.choices[key] if key in spec.choices else OmegaConf.select(config, key)
                    assert str(got) == value, (family, role_name, key)
            if role.lr_from is not None:
                assert roles[role.lr_from].grid == check.LR_GRID


def test_every_row_has_the_same_search_budget():
    sizes = {len(role.grid) for roles in check.FAMILIES.values() for role in roles.values()}
    assert sizes == {len(check.LR_GRID)}


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    out, docs = root / "runs", root / "docs"
    argv = ["--size", "tiny", "--out", str(out), "--docs", str(docs), "--cache", str(root / "cache")]
    assert check.main([*argv, "--embedding-size", "8"]) == 0
    return out, docs


def _tag(family):
    return f"regularizer_check_{family}-glyphs-tiny-d8"


@pytest.mark.slow
def test_tiny_check_searches_on_validation_and_runs_methods_at_their_bases_rate(tiny_check):
    out, _ = tiny_check
    searches = sorted(p for p in out.iterdir() if "-search-" in p.name)
    roles = sum(len(r) for r in check.FAMILIES.values())
    assert len(searches) == roles * len(check.LR_GRID)
    for exp_dir in searches:
        records = ExperimentFolder(exp_dir).records()
        assert {r["split"] for r in records} == {"val"}
    for family, roles_of in check.FAMILIES.items():
        for role_name, role in roles_of.items():
            final = ExperimentFolder(out / f"{_tag(family)}-{role_name}")
            assert {r["split"] for r in final.records()} == {"val", "test"}
            assert final.seeds() == [0, 1]
            base = role_name if role.lr_from is None else role.lr_from
            scores = {
                lr: val_score(out / f"{_tag(family)}-{base}-search-lr{lr}")
                for lr in (p[0].split("=")[1] for p in check.LR_GRID)
            }
            assert final.config()["optimizer"]["lr"] == float(max(scores, key=lambda lr: scores[lr]))


@pytest.mark.slow
def test_tiny_check_reports_pair_each_row_with_its_base(tiny_check):
    _, docs = tiny_check
    for report, (family, baseline, roles, _) in check.REPORTS.items():
        folder = docs / f"regularizer_check_{report}-glyphs-tiny-d8"
        numbers = read_report_data(folder / "report.json")
        names = {f"{_tag(family)}-{r}" for r in (roles or check.FAMILIES[family])}
        assert {r.experiment for r in numbers.rows} == names
        for row in numbers.rows:
            assert (row.diff_mean is None) == (row.experiment == f"{_tag(family)}-{baseline}")
        text = (folder / "report.md").read_text()
        assert "python -m experiments.regularizer_check --size tiny" in text
        assert "## Hyperparameter search (validation only)" in text
        assert "## Budget" in text


@pytest.mark.slow
def test_tiny_check_records_the_centers_geometry_of_the_weight_rows(tiny_check):
    out, docs = tiny_check
    for family in check.WEIGHT_FAMILIES:
        folder = docs / f"regularizer_check_{family}-glyphs-tiny-d8"
        geometry = json.loads((folder / "center_geometry.json").read_text())
        assert set(geometry) == set(check.FAMILIES[family])
        for role, values in geometry.items():
            exp = ExperimentFolder(out / f"{_tag(family)}-{role}")
            for key in GEOMETRY_KEYS:
                want = []
                for seed in exp.seeds():
                    per_fold = []
                    for fold in exp.folds_of(seed):
                        entries = {e["epoch"]: e[key] for e in read_geometry(fold.center_geometry)}
                        per_fold.append(entries[read_checkpoint(fold.latest)["state"]["best_epoch"]])
                    want.append(sum(per_fold) / len(per_fold))
                assert values[key]["tested"] == pytest.approx(want)
            # every row starts from the same centers: the same seeds draw the same initial proxies
            assert values["mean_cosine"]["init"] == pytest.approx(geometry["baseline"]["mean_cosine"]["init"])
        assert "## The class centers' geometry" in (folder / "report.md").read_text()
    assert not (docs / "regularizer_check_multi_similarity-glyphs-tiny-d8" / "center_geometry.json").exists()


@pytest.mark.slow
def test_tiny_check_records_each_runs_seconds(tiny_check):
    out, _ = tiny_check
    timing = check.read_timing(out)
    experiments = {p.name for p in out.iterdir() if (p / "results.json").exists()}
    assert set(timing) == experiments
    assert all(t["cpu_s"] > 0 and t["wall_s"] > 0 for t in timing.values())
