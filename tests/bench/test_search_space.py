"""Search spaces, budgets, the per-trial seeded sampler and study files: what is refused before any
trial runs, and what each piece gives Optuna."""

import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from pml_regularizers.bench import ConfigError
from pml_regularizers.bench.search.budget import SearchBudget
from pml_regularizers.bench.search.sampler import TrialSeededTPESampler
from pml_regularizers.bench.search.space import parse_space, resolve_space
from pml_regularizers.bench.search.study import list_studies, load_study
from pml_regularizers.bench.spec.compose import load_search_ranges, load_spec


def config(*overrides):
    return load_spec(list(overrides)).config


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("tag(log, interval(1e-5, 1e-1))", FloatDistribution(1e-5, 1e-1, log=True)),
        ("interval(1, 64)", FloatDistribution(1.0, 64.0)),
        ("tag(int, interval(1, 20))", IntDistribution(1, 20)),
        ("tag(int, interval(1.5, 20.5))", IntDistribution(2, 20)),
        ("tag(int, log, interval(1, 64))", IntDistribution(1, 64, log=True)),
        ("range(2, 8)", IntDistribution(2, 7)),
        ("range(2, 9, 3)", IntDistribution(2, 8, step=3)),
        ("choice(hinge, square, signed)", CategoricalDistribution(["hinge", "square", "signed"])),
        ("choice(0.1, 1, 'a b')", CategoricalDistribution([0.1, 1, "a b"])),
    ],
)
def test_parse_space_reads_hydra_sweeps_as_optuna_distributions(expression, expected):
    (dimension,) = parse_space({"regularizer.lam": expression}).dimensions
    assert dimension.distribution == expected
    assert dimension.key == "regularizer.lam" and dimension.expression == expression


@pytest.mark.parametrize(
    "expression, message",
    [
        ("0.1", "is not a range"),
        ("interval(4, 1)", "low < high"),
        ("interval(a, 1)", "cannot parse"),
        ("tag(log, interval(0, 1))", "log range needs low > 0"),
        ("tag(exp, interval(1, 2))", "unknown tag"),
        ("range(5, 5)", "start < stop"),
        ("range(1, 5, 0)", "start < stop"),
        ("range(1.5, 4)", "start < stop"),
        ("tag(log, range(1, 9, 2))", "log range has step 1"),
        ("tag(int, interval(1.2, 1.8))", "holds no integer"),
        ("choice([1, 2], 3)", "plain values"),
        ("interval(1, 2", "cannot parse"),
    ],
)
def test_parse_space_refuses_what_it_cannot_search(expression, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_space({"regularizer.lam": expression})


def test_parse_space_checks_keys_against_the_config():
    cfg = config("regularizer=skewed_mean")
    assert parse_space({"regularizer.lam": "interval(1, 2)", "miner": "choice(none, multi_similarity)"}, cfg)
    with pytest.raises(ConfigError, match=r"unknown key regularizer\.lamb.*regularizer\.lam"):
        parse_space({"regularizer.lamb": "interval(1, 2)"}, cfg)
    with pytest.raises(ConfigError, match="unknown key optimiser.lr"):
        parse_space({"optimiser.lr": "interval(1, 2)"}, cfg)


def test_edges_and_overrides_follow_the_ranges():
    ranges = {"optimizer.lr": "tag(log, interval(1e-5, 1e-1))", "regularizer.lam": "interval(1, 64)"}
    space = parse_space({**ranges, "miner": "choice(a, b)"})
    assert space.edges({"optimizer.lr": 1.05e-5, "regularizer.lam": 32.0, "miner": "a"}) == ["optimizer.lr"]
    assert space.edges({"optimizer.lr": 1e-3, "regularizer.lam": 63.9, "miner": "b"}) == ["regularizer.lam"]
    assert space.edges({"optimizer.lr": 1e-3, "regularizer.lam": 32.0, "miner": "b"}) == []
    assert space.overrides({"optimizer.lr": 0.001, "regularizer.lam": 2.5, "miner": "b"}) == [
        "optimizer.lr=0.001",
        "regularizer.lam=2.5",
        "miner=b",
    ]


def test_the_config_groups_declare_their_ranges_outside_the_run_config():
    ranges = load_search_ranges(["regularizer=skewed_mean"])
    assert ranges == {
        "regularizer.weight": "tag(log, interval(1e-3, 10))",
        "regularizer.lam": "tag(log, interval(1, 64))",
        "optimizer.lr": "tag(log, interval(1e-5, 1e-1))",
        "optimizer.loss_lr": "tag(log, interval(1e-5, 1))",
    }
    spec = load_spec(["regularizer=skewed_mean"])
    assert "_search_" not in spec.config["regularizer"] and "_search_" not in spec.config["optimizer"]
    assert load_search_ranges(["regularizer=none"]).keys() == {"optimizer.lr", "optimizer.loss_lr"}
    # a range of a nested key: DVML's KL weight, PML's loss weight of the term, resolved and searchable
    dvml = ["loss=triplet", "embedder=dvml", "trainer=dvml"]
    ranges = load_search_ranges(dvml)
    assert ranges["trainer.loss_weights.kl_loss"] == "tag(log, interval(1e-4, 10))"
    space = resolve_space(dvml, load_spec(dvml).config, {})
    assert "trainer.loss_weights.kl_loss" in [d.key for d in space.dimensions]


def test_resolve_space_drops_set_keys_and_refuses_a_key_both_set_and_searched():
    overrides = ["regularizer=skewed_mean", "regularizer.lam=8"]
    cfg = config(*overrides)
    space = resolve_space(overrides, cfg)
    assert [d.key for d in space.dimensions] == ["regularizer.weight", "optimizer.lr", "optimizer.loss_lr"]
    space = resolve_space(overrides, cfg, {"optimizer.loss_lr": None, "optimizer.lr": "interval(0.1, 0.2)"})
    weight = "tag(log, interval(1e-3, 10))"
    assert space.to_dict() == {"regularizer.weight": weight, "optimizer.lr": "interval(0.1, 0.2)"}
    with pytest.raises(ConfigError, match="regularizer.lam is set by an override and searched"):
        resolve_space(overrides, cfg, {"regularizer.lam": "interval(1, 4)"})
    bare = ["optimizer.lr=0.1", "optimizer.loss_lr=0.1"]
    with pytest.raises(ConfigError, match="at least one searched key"):
        resolve_space(bare, config(*bare))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"trials": -1}, "trials must be an int >= 0"),
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"cv_folds": 1}, "cv_folds must be 0 or an int >= 2"),
        ({"cv_folds": 0}, "needs cv_folds >= 2"),
        ({"patience": 0}, "patience must be null"),
        ({"final_seeds": 0}, "final_seeds must be an int >= 1"),
        ({"trials": 2.0}, "trials must be an int"),
    ],
)
def test_budget_refuses_what_cannot_run(fields, message):
    good = {"trials": 4, "epochs": 2, "cv_folds": 2, "patience": None, "final_seeds": 2}
    with pytest.raises(ConfigError, match=message):
        SearchBudget(**{**good, **fields})


def test_no_search_runs_without_folds():
    budget = SearchBudget(trials=0, epochs=3, cv_folds=0, patience=None, final_seeds=2)
    assert budget.run_overrides() == ["epochs=3", "cv_folds=0", "patience=null"]


def _draws(sampler, numbers):
    """The parameters ``sampler`` gives trials ``numbers`` of an empty study (its random start-up)."""
    study = optuna.create_study(sampler=sampler)
    draws = {}
    for _ in range(max(numbers) + 1):
        trial = study.ask()
        params = {"x": trial.suggest_float("x", 1e-5, 1.0, log=True), "y": trial.suggest_int("y", 1, 100)}
        study.tell(trial, 0.0)
        draws[trial.number] = params
    return [draws[n] for n in numbers]


def test_trial_seeded_sampler_draws_from_the_seed_and_the_trial_number():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = _draws(TrialSeededTPESampler(7), [0, 1, 2])
    assert _draws(TrialSeededTPESampler(7), [0, 1, 2]) == first  # reproducible
    assert first[0] != first[1] != first[2]  # trials differ
    assert _draws(TrialSeededTPESampler(8), [0]) != first[:1]  # so do seeds
    # the keys of one trial come from one random stream, not each from a fresh copy of it
    reference = optuna.samplers.TPESampler(seed=(7 * 1_000_003 + 0) % 2**32)
    assert _draws(reference, [0]) == first[:1]
    with pytest.raises(TypeError, match="seed"):
        TrialSeededTPESampler(1, seed=2)


def test_every_published_study_composes_each_row(tmp_path):
    names = list_studies()
    assert {"compare", "regularizer_check", "skewed_mean_proxy_anchor", "dvml_triplet"} <= set(names)
    for name in names:
        study = load_study(name)
        for row in study.rows:
            overrides = [*study.overrides, *row.overrides, *study.budget.run_overrides()]
            cfg = config(*overrides)
            if study.budget.trials:
                space = resolve_space(overrides, cfg, {**study.space, **row.space})
                assert "optimizer.lr" in space.to_dict(), (name, row.name)


def write(tmp_path, text):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


GOOD = """
title: T
budget: {trials: 2, epochs: 1, cv_folds: 2, patience: null, final_seeds: 1}
rows:
  a: [loss=proxy_anchor]
  b: {overrides: [regularizer=skewed_mean], space: {regularizer.lam: null}}
"""


def test_load_study_reads_a_study_file(tmp_path):
    study = load_study(write(tmp_path, GOOD))
    assert study.name == "study" and study.title == "T"
    assert [r.name for r in study.rows] == ["a", "b"]
    assert study.rows[1].space == {"regularizer.lam": None}
    (report,) = study.reports
    assert report.rows == ("a", "b")
    assert study.with_budget(trials=5).budget.trials == 5
    with pytest.raises(ConfigError, match="needs cv_folds >= 2"):
        study.with_budget(cv_folds=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (("title: T", "titel: T"), r"unknown keys \['titel'\], missing keys \['title'\]"),
        (("patience: null, ", ""), "budget must set exactly"),
        (("trials: 2", "trials: -2"), "budget: trials must be"),
        (("a: [loss=proxy_anchor]", "a: [loss]"), "key=value overrides"),
        (("space: {regularizer.lam: null}", "space: {regularizer.lam: 3}"), "range expression or null"),
        (("b: {overrides", "b: {overide"), "takes overrides and space"),
        (("rows:", "reports: {r: {title: x, rows: [a, c]}}\nrows:"), "must name rows of the study"),
        (("rows:", "curves: [{log: x}]\nrows:"), "a curve is"),
        (("title: T", "title: [T"), "not valid YAML"),
    ],
)
def test_load_study_names_the_key_it_refuses(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_study(write(tmp_path, GOOD.replace(*change)))


def test_an_unknown_study_name_lists_the_published_ones():
    listed = r"no study 'compar' \(did you mean compare\?\); the published ones: compare, "
    with pytest.raises(ConfigError, match=listed):
        load_study("compar")
    with pytest.raises(ConfigError, match="cannot read study file"):
        load_study(Path("/nonexistent/x.yaml"))
