"""The experiment folder (``pml_regularizers.bench.results.folder``) read back from real runs of the
runner: seeds and folds, the checkpoint each fold tested and its models rebuilt (checked against the
test embeddings the runner saved), unfinished folds, results in the current format and in the one
written before seed results shared it, and whether a folder is finished for a config."""

import dataclasses
import json
import shutil

import pytest
import torch

from pml_regularizers.bench import (
    ExperimentFolder,
    FoldFolder,
    Results,
    UserError,
    experiment_data,
    experiment_split,
    load_spec,
    run_experiment,
    torch_dataset,
    trained_models,
)
from pml_regularizers.bench.protocol import runner

from .test_runner import tiny
from .test_runner_faults import interrupted_run

pytestmark = pytest.mark.slow

COMMAND = "pml-bench run (the test's)"


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """A finished run with 2 cross-validation folds, 1 seed and 3 epochs, and its config."""
    cfg = load_spec(tiny(tmp_path_factory.mktemp("cv"), "cv_folds=2", "seeds=1", "epochs=3"))
    return cfg, ExperimentFolder(run_experiment(cfg, command=COMMAND))


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A finished run without cross-validation (one fold a seed), 2 seeds of 2 epochs, and its config."""
    cfg = load_spec(tiny(tmp_path_factory.mktemp("plain")))
    return cfg, ExperimentFolder(run_experiment(cfg, command=COMMAND))


def state_of(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state"]


@torch.no_grad()
def rebuilt_test_embeddings(folder, folds):
    """The test set embedded by the rebuilt tested models of ``folds``, each L2-normalised, side by
    side (as the runner concatenates folds), and the labels."""
    data = experiment_data(folder)
    _, test_classes, _ = experiment_split(folder, data)
    dataset = torch_dataset(data.subset(test_classes), folder.spec().data, train=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = [int(dataset[i][1]) for i in range(len(dataset))]
    parts = []
    for fold in folds:
        models = trained_models(folder, fold, data)
        parts.append(torch.nn.functional.normalize(models["embedder"](models["trunk"](images)), dim=1))
    return torch.cat(parts, 1), labels


def test_seeds_and_folds_are_those_the_runner_wrote(cv_run, plain_run):
    _, cv = cv_run
    _, plain = plain_run
    assert cv.seeds() == [0] and plain.seeds() == [0, 1]
    assert cv.folds() == [FoldFolder(cv.path / "seed_0" / f"fold_{f}", 0, f) for f in (0, 1)]
    assert plain.folds() == [FoldFolder(plain.path / f"seed_{s}" / "fold_0", s, 0) for s in (0, 1)]
    assert ExperimentFolder(plain.path / "missing").seeds() == []
    assert [p.relative_to(plain.path).as_posix() for p in plain.loss_history_files()] == [
        f"seed_{s}/fold_0/logs/loss_histories.csv" for s in (0, 1)
    ]


def test_with_cross_validation_the_best_epoch_is_tested(cv_run):
    cfg, folder = cv_run
    best_epochs = []
    for fold in folder.folds():
        latest = state_of(fold.path / "checkpoint_latest.pt")
        assert latest["done"] and latest["epoch"] == cfg.protocol.epochs
        assert folder.tested_checkpoint(fold) == fold.path / "checkpoint_best.pt"
        assert state_of(folder.tested_checkpoint(fold))["best_epoch"] == latest["best_epoch"]
        best_epochs.append(latest["best_epoch"])
    # a fold whose best epoch is not its last: testing the last epoch's models would differ
    assert min(best_epochs) < cfg.protocol.epochs, best_epochs


def test_without_cross_validation_the_last_epoch_is_tested(plain_run):
    cfg, folder = plain_run
    for fold in folder.folds():
        assert folder.tested_checkpoint(fold) == fold.path / "checkpoint_latest.pt"
        assert state_of(fold.latest)["epoch"] == cfg.protocol.epochs
        assert not fold.best.exists()


def test_rebuilt_models_give_the_saved_test_embeddings(cv_run, plain_run):
    _, cv = cv_run
    saved = cv.test_embeddings(0)
    embeddings, labels = rebuilt_test_embeddings(cv, cv.folds())
    assert embeddings.shape == (len(labels), 2 * 8)
    torch.testing.assert_close(embeddings, saved["embeddings"])
    assert labels == saved["labels"].tolist()

    _, plain = plain_run
    for seed in plain.seeds():
        saved = plain.test_embeddings(seed)
        embeddings, labels = rebuilt_test_embeddings(plain, plain.folds_of(seed))
        torch.testing.assert_close(embeddings, saved["embeddings"])
        assert labels == saved["labels"].tolist()
    assert plain.first_test_embeddings()[0] == 0


def test_unfinished_folds_have_no_tested_checkpoint_or_models(tmp_path, monkeypatch):
    exp_dir = interrupted_run(tmp_path, monkeypatch, 1, "cv_folds=2")  # fold 0 after epoch 1 of 3
    folder = ExperimentFolder(exp_dir)
    state = state_of(folder.fold(0, 0).latest)
    assert (state["epoch"], state["done"]) == (1, False)
    assert folder.folds() == [folder.fold(0, 0)]  # fold 1 never started
    for fold in (folder.fold(0, 0), folder.fold(0, 1)):
        assert fold.tested_checkpoint(validated=True) is None
        assert trained_models(folder, fold) is None
    assert folder.seed_results(0) is None and folder.test_embeddings(0) is None
    assert folder.first_test_embeddings() is None
    with pytest.raises(FileNotFoundError, match=f"no results.json in experiment folder {exp_dir}"):
        folder.results()
    fold = folder.fold(0, 0)
    fold.latest.write_bytes(b"not a checkpoint")
    fold.latest.with_name("checkpoint_latest.backup.pt").write_bytes(b"nor this")
    with pytest.raises(UserError, match=str(fold.latest)):
        fold.tested_checkpoint(validated=True)


def test_results_record_what_ran_and_each_seed_keeps_its_share(plain_run):
    cfg, folder = plain_run
    results = folder.results()
    assert results.experiment == folder.path.name == "glyphs-proxy_anchor-linear"
    assert results.config == cfg.config == folder.config()
    assert (results.command, results.world_size) == (COMMAND, 1)
    assert folder.command() == COMMAND and folder.device() == results.device
    assert json.loads(folder.results_path.read_text()) == results.to_json()
    assert [(r["seed"], r["split"], r["embedding"]) for r in results.records] == [
        (0, "test", "single"),
        (1, "test", "single"),
    ]
    for seed in (0, 1):  # one format: a seed's results are the experiment's, restricted to the seed
        expected = dataclasses.replace(results, records=[r for r in results.records if r["seed"] == seed])
        assert folder.seed_results(seed) == expected
    assert folder.records() == [{**r, "experiment": results.experiment} for r in results.records]
    assert folder.name() == results.experiment


def test_folders_written_before_seed_results_shared_the_format_still_read(tmp_path, monkeypatch):
    cfg = load_spec(tiny(tmp_path, "seeds=1", "epochs=1"))
    folder = ExperimentFolder(run_experiment(cfg))
    records = folder.results().records
    # what earlier versions wrote: no command, world size or device, and {"seed", "records"} per seed
    old = {"experiment": folder.path.name, "config": cfg.config, "records": records}
    folder.results_path.write_text(json.dumps(old))
    folder.seed_results_path(0).write_text(json.dumps({"seed": 0, "records": records}))
    assert folder.results() == Results(folder.path.name, records, old["config"])
    assert folder.command() is None and folder.device() is None
    assert folder.seed_results(0) == Results(folder.path.name, records)
    # the runner takes such a seed as finished: it trains nothing and writes results.json from it
    folder.results_path.unlink()
    monkeypatch.setattr(runner, "train_fold", lambda job: pytest.fail("a finished seed was trained again"))
    run_experiment(cfg)
    assert folder.results().records == records


def test_results_errors_name_the_file(tmp_path):
    folder = ExperimentFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="results.json"):
        folder.records()
    folder.results_path.write_text("{not json")
    with pytest.raises(ValueError, match=str(folder.results_path)):
        folder.records()
    folder.results_path.write_text(json.dumps({"experiment": "x", "records": [{"seed": 0}]}))
    with pytest.raises(ValueError, match="record 0"):
        folder.records()
    folder.results_path.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="experiment"):
        folder.records()
    assert folder.name() == tmp_path.name  # no readable name: the folder's
    folder.results_path.write_text(json.dumps({"experiment": "x", "records": [], "command": 3}))
    with pytest.raises(ValueError, match="'command' must be a string or null"):
        folder.command()
    folder.seed_results_path(0).parent.mkdir()
    folder.seed_results_path(0).write_text(json.dumps({"seed": 0, "records": "none"}))
    with pytest.raises(ValueError, match=f"{folder.seed_results_path(0)} must have a list 'records'"):
        folder.seed_results(0)


def test_finished_only_for_its_own_config(plain_run, tmp_path):
    cfg, folder = plain_run
    assert folder.is_finished(cfg)
    assert not folder.is_finished(load_spec(tiny(tmp_path, "epochs=3")))
    copy = ExperimentFolder(tmp_path / "copy")
    shutil.copytree(folder.path, copy.path)
    assert copy.is_finished(cfg)
    copy.results_path.unlink()  # the seeds finished, the experiment did not
    assert not copy.is_finished(cfg) and copy.has_finished_work()
    assert not ExperimentFolder(tmp_path / "missing").is_finished(cfg)
