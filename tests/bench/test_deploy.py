"""Training the model to deploy (``test_split=none``: every class trains, nothing is tested) and
embedding a data set with an experiment's models (``pml-bench embed``): the config rules, folders
saved before ``test_split`` existed, runs end to end on tiny glyph sets, the embeddings checked
against those the runner saved, and the errors."""

import json
from pathlib import Path

import pytest
import torch

from pml_regularizers.bench import (
    BenchAccuracyCalculator,
    ConfigError,
    ExperimentFolder,
    Results,
    UserError,
    experiment_split,
    load_experiment_data,
    load_spec,
    run_experiment,
)
from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.data import FeatureSet, ImageSet
from pml_regularizers.bench.protocol.embedding import check_trunk_input, embed_data_set, embedding_config
from pml_regularizers.bench.protocol.preflight import split_classes

from .test_runner import tiny
from .test_runner_faults import interrupted_run

# ---------------------------------------------------------------------------------------------
# Config rules


def test_test_split_none_is_named_apart_and_the_default_names_are_unchanged():
    assert load_spec([]).experiment == "glyphs-proxy_anchor-linear"
    assert load_spec([]).protocol.test_split == "half"
    cfg = load_spec(["test_split=none", "regularizer=skewed_mean"])
    assert cfg.experiment == "glyphs-proxy_anchor-skewed_mean-linear-all_classes"
    assert load_spec(["test_split=none", "experiment=mine"]).experiment == "mine"
    load_spec(["test_split=none", "cv_folds=2"])  # validation on folds of every class


def test_contradictory_or_bad_test_split_values_are_refused():
    with pytest.raises(ConfigError, match="test=false cannot go with test_split=none"):
        load_spec(["test_split=none", "test=false", "cv_folds=2"])
    with pytest.raises(ConfigError, match="test_split must be half or none, got 'all'"):
        load_spec(["test_split=all"])
    with pytest.raises(ConfigError, match="patience must be null when cv_folds=0"):
        load_spec(["test_split=none", "patience=2"])


def test_test_split_none_trains_on_every_class_and_tests_none():
    labels = torch.arange(6).repeat_interleave(3)
    train, test, folds = split_classes(load_spec(["test_split=none"]).protocol, labels)
    assert (train, test, folds) == ([0, 1, 2, 3, 4, 5], [], [([0, 1, 2, 3, 4, 5], [])])
    train, test, folds = split_classes(load_spec(["test_split=none", "cv_folds=3"]).protocol, labels)
    assert train == [0, 1, 2, 3, 4, 5] and test == []
    assert sorted(c for _, va in folds for c in va) == train  # the folds validate on every class
    assert split_classes(load_spec([]).protocol, labels)[:2] == ([0, 1, 2], [3, 4, 5])
    with pytest.raises(ConfigError, match="cv_folds=8 needs at least 8 training classes; the data set holds 6"):
        split_classes(load_spec(["test_split=none", "cv_folds=8"]).protocol, labels)
    with pytest.raises(ConfigError, match="test_split=none needs at least 2"):
        split_classes(load_spec(["test_split=none"]).protocol, torch.zeros(4, dtype=torch.int64))


def saved_before_test_split(folder, cfg):
    """Write ``cfg``'s config.yaml as it was saved before the key existed, and a results.json."""
    folder.path.mkdir(parents=True)
    text = cfg.to_yaml()
    assert "test_split: half\n" in text
    folder.config_path.write_text(text.replace("test_split: half\n", ""))
    folder.write_results(Results(cfg.experiment, []))
    return folder.config_path.read_text()


def test_a_folder_saved_before_test_split_existed_is_still_finished_and_claimed(tmp_path):
    cfg = load_spec(tiny(tmp_path))
    folder = ExperimentFolder(tmp_path / "old")
    old_text = saved_before_test_split(folder, cfg)
    assert folder.is_finished(cfg) and folder.holds_config(cfg)
    assert folder.config()["test_split"] == "half"
    folder.claim(cfg, evaluate_only=False)
    assert folder.config_path.read_text() == old_text  # kept as it was
    data = load_experiment_data(cfg.data)
    assert experiment_split(folder, data)[:2] == split_classes(cfg.protocol, data.labels)[:2]
    for other in (load_spec(tiny(tmp_path, "test_split=none")), load_spec(tiny(tmp_path, "epochs=3"))):
        assert not folder.is_finished(other)
    with pytest.raises(ConfigError, match="different config \\(differs at: test_split\\)"):
        folder.claim(load_spec(tiny(tmp_path, "test_split=none")), evaluate_only=False)


# ---------------------------------------------------------------------------------------------
# Which data set embed reads, and whether the trunk takes it


def test_embed_replaces_the_dataset_group_only():
    saved = load_spec(["dataset.size=16", "dataset.options.per_class=6"])
    same = embedding_config(saved, [])
    assert same.config == saved.config and same == saved
    changed = embedding_config(saved, ["dataset.options.per_class=3", "+dataset.options.seed=5"])
    assert changed.data.options == {"num_classes": 600, "per_class": 3, "seed": 5}
    assert changed.data.size == 16  # the experiment's own, not the option's default
    assert saved.data.options["per_class"] == 6  # a copy
    other = embedding_config(saved, ["dataset=omniglot", "dataset.root=/data/omniglot"])
    assert other.data.choice == "omniglot" and other.data.root == "/data/omniglot"
    assert other.data.size == 32 and other.models.trunk == saved.models.trunk
    for override, expected in [
        ("loss=arcface", "overrides of the dataset group only .* got 'loss=arcface'"),
        ("trunk.image_size=32", "overrides of the dataset group only"),
        ("dataset.colour=1", "unknown key dataset.colour \\(did you mean fill\\?\\)|unknown key dataset.colour;"),
        ("~dataset.fill", "cannot delete a key"),
        ("dataset.size=[", "embed: .*no viable alternative"),
    ]:
        with pytest.raises(UserError, match=expected):
            embedding_config(saved, [override])
    with pytest.raises(ConfigError, match="dataset.root"):
        embedding_config(saved, ["dataset=omniglot"])


def test_a_data_set_the_trunk_cannot_take_is_named():
    saved = load_spec(["dataset.size=16"])
    with pytest.raises(UserError, match="dataset.channels is 3 but .*\\(trunk.in_channels=1\\)"):
        check_trunk_input(embedding_config(saved, ["dataset.channels=3"]))
    with pytest.raises(UserError, match="dataset.size is 32 but .*\\(trunk.image_size=16\\)"):
        check_trunk_input(embedding_config(saved, ["dataset.size=32"]))
    features = FeatureSet(torch.zeros(4, 5), torch.tensor([0, 0, 1, 1]), ["a", "b"])
    with pytest.raises(UserError, match="gives feature vectors but the experiment's trunk \\(trunk=conv4\\)"):
        check_trunk_input(saved, features)
    mlp = load_spec(["trunk=mlp"])
    check_trunk_input(mlp, features)
    with pytest.raises(UserError, match="gives images but the experiment's trunk \\(trunk=mlp\\) takes feature"):
        check_trunk_input(mlp, ImageSet(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"]))


# ---------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_an_all_classes_run_trains_on_every_class_and_resumes(tmp_path, capsys):
    args = tiny(tmp_path, "test_split=none", "seeds=1")
    assert cli_main(["run", *args]) == 0
    folder = ExperimentFolder(tmp_path / "runs" / "glyphs-proxy_anchor-linear-all_classes")
    latest = folder.fold(0, 0).latest
    out = capsys.readouterr().out
    assert "trained on all 16 classes of dataset=glyphs; no test split (test_split=none)" in out
    assert f"  {latest}\n" in out
    checkpoint = torch.load(latest, weights_only=True)
    assert checkpoint["loss"]["proxies"].shape == (16, 8)  # a proxy for each of the 16 classes
    assert checkpoint["state"]["done"] and checkpoint["state"]["epoch"] == 2
    assert folder.config()["test_split"] == "none"
    assert folder.results().records == [] and folder.seed_results(0).records == []
    assert folder.test_embeddings(0) is None and folder.folds() == [folder.fold(0, 0)]

    stamps = {path: path.stat().st_mtime_ns for path in (folder.results_path, latest)}
    run_experiment(load_spec(args))  # finished: nothing is redone
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    folder.results_path.unlink()
    folder.seed_results_path(0).unlink()
    run_experiment(load_spec(args))  # the fold has finished: its checkpoint is only read
    assert latest.stat().st_mtime_ns == stamps[latest]
    assert folder.results().records == [] and folder.results().config["test_split"] == "none"

    assert cli_main(["report", str(folder.path), "--out", str(tmp_path / "report")]) == 0
    assert "No test records found." in capsys.readouterr().out


@pytest.mark.slow
def test_all_classes_with_folds_validates_on_folds_of_every_class(tmp_path):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "test_split=none", "cv_folds=2", "seeds=1", "epochs=1")))
    folder = ExperimentFolder(exp_dir)
    assert [(r["split"], r["embedding"]) for r in folder.results().records] == [("val", "separated")]
    for fold in (0, 1):  # each fold trains on half of the 16 classes
        assert torch.load(folder.fold(0, fold).latest, weights_only=True)["loss"]["proxies"].shape == (8, 8)
    assert folder.test_embeddings(0) is None


@pytest.mark.slow
def test_embedding_the_experiments_data_reproduces_the_saved_test_embeddings(tmp_path, capsys):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "cv_folds=2", "seeds=1", "epochs=1")))
    saved = ExperimentFolder(exp_dir).test_embeddings(0)
    out = tmp_path / "emb" / "all.pt"
    assert cli_main(["embed", str(exp_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "embedded 96 images of 16 classes (dataset=glyphs)" in printed
    assert "(the folds' embeddings concatenated)" in printed
    written = torch.load(out, weights_only=True)
    assert written["embeddings"].shape == (96, 16)  # two folds' 8-d embeddings side by side
    assert written["labels"].tolist() == torch.arange(16).repeat_interleave(6).tolist()
    assert (written["experiment"], written["seed"], written["folds"], written["embedding"]) == (
        "glyphs-proxy_anchor-linear",
        0,
        [0, 1],
        "concatenated",
    )
    assert written["class_names"] == load_experiment_data(ExperimentFolder(exp_dir).spec().data).class_names
    test_rows = written["labels"] >= 8  # the test half: classes 8..15 of 16
    torch.testing.assert_close(written["embeddings"][test_rows], saved["embeddings"])
    assert torch.equal(written["labels"][test_rows] - 8, saved["labels"])

    metrics = json.loads((tmp_path / "emb" / "all.metrics.json").read_text())
    expected = BenchAccuracyCalculator().get_accuracy(written["embeddings"], written["labels"])
    assert metrics["metrics"] == pytest.approx({k: float(v) for k, v in expected.items()})
    assert (metrics["num_images"], metrics["num_classes"], metrics["embedding"]) == (96, 16, "concatenated")
    assert f"MAP@R        {expected['mean_average_precision_at_r']:.4f}" in printed
    concatenated = [r for r in ExperimentFolder(exp_dir).results().records if r["embedding"] == "concatenated"]
    test_half = BenchAccuracyCalculator().get_accuracy(written["embeddings"][test_rows], saved["labels"])
    assert concatenated[0]["metrics"] == pytest.approx({k: float(v) for k, v in test_half.items()})


@pytest.mark.slow
def test_embedding_another_data_set_and_the_errors(tmp_path, monkeypatch, capsys):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "test_split=none", "seeds=2", "epochs=1")))
    out = tmp_path / "other.pt"
    done = embed_data_set(exp_dir, out, ["dataset.options.per_class=3", "dataset.options.num_classes=5"], seed=1)
    written = torch.load(out, weights_only=True)
    assert written["embeddings"].shape == (15, 8) and (done.seed, written["seed"]) == (1, 1)
    assert torch.allclose(written["embeddings"].norm(dim=1), torch.ones(15))
    assert written["labels"].tolist() == torch.arange(5).repeat_interleave(3).tolist()
    assert done.metrics_file == tmp_path / "other.metrics.json" and done.metrics_file.is_file()
    embed_data_set(exp_dir, tmp_path / "one.pt", ["dataset.options.per_class=1", "dataset.options.num_classes=5"])
    assert not (tmp_path / "one.metrics.json").exists()  # single-image classes: no metrics

    unfinished = interrupted_run(tmp_path / "unfinished", monkeypatch, 1)
    capsys.readouterr()
    for argv, expected in [
        ([str(tmp_path)], "holds no experiment (no config.yaml)"),
        ([str(unfinished)], "seed_0/fold_0 has not finished training"),
        ([str(exp_dir), "loss=arcface"], "overrides of the dataset group only"),
        ([str(exp_dir), "dataset.size=32"], "dataset.size is 32 but the experiment's trunk takes 16x16 images"),
        ([str(exp_dir), "--seed", "2"], "--seed must be one of the experiment's seeds 0..1, got 2"),
    ]:
        assert cli_main(["embed", *argv, "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pml-bench: error: ") and expected in err and err.count("\n") == 1
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, expected in [
        (tmp_path, f"--out: {tmp_path} is a folder"),
        (a_file / "emb.pt", f"--out: {a_file / 'emb.pt'} lies under {a_file}, which is a file, not a folder"),
        (Path("/proc/emb.pt"), "--out: /proc/emb.pt cannot be written: creating a file in /proc fails"),
    ]:
        assert cli_main(["embed", str(exp_dir), "--out", str(out)]) == 2  # before anything is embedded
        err = capsys.readouterr().err
        assert err.startswith("pml-bench: error: ") and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.pt").exists()
