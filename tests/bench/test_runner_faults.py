"""How the runner fails: runs that would measure nothing are refused before training, a refused
command leaves no folder behind, corrupt or foreign checkpoints are named (and the previous good
one is resumed from), an experiment folder is locked against a second run, and every user error
reaches the command line as one ``pml-bench: error:`` line with exit status 2."""

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pml_regularizers.bench import ConfigError, ExperimentFolder, UserError, load_spec, run_experiment, trained_models
from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.protocol import fold as training

from .test_runner import metrics_of, tiny

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "glyphs-proxy_anchor-linear"  # the name tiny() configs get without experiment=


def cli_error(capsys, *argv):
    """Run the CLI and return its one error line, checking exit status 2 and no traceback."""
    capsys.readouterr()  # drop what earlier steps printed
    status = cli_main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("pml-bench: error: "), err
    return lines[0]


class Interrupted(Exception):
    """Stands for a crash: raised right after a chosen number of epochs' checkpoints."""


def interrupt_after(monkeypatch, epochs):
    """Make the runner stop (raise Interrupted) once it has saved ``epochs`` latest checkpoints."""
    original, saved = training.save_fold_checkpoint, []

    def save(path, *args, **kwargs):
        original(path, *args, **kwargs)
        if Path(path).name == "checkpoint_latest.pt":
            saved.append(path)
            if len(saved) == epochs:
                raise Interrupted

    monkeypatch.setattr(training, "save_fold_checkpoint", save)


def interrupted_run(tmp_path, monkeypatch, epochs, *extra):
    """The folder of a ``tiny`` run (1 seed, 3 epochs) stopped after ``epochs`` epochs."""
    cfg = load_spec(tiny(tmp_path, "seeds=1", "epochs=3", *extra))
    with monkeypatch.context() as patch:
        interrupt_after(patch, epochs)
        with pytest.raises(Interrupted):
            run_experiment(cfg)
    return tmp_path / "runs" / cfg.experiment


def image_folder(root, classes=8, per_class=6):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")


# ---------------------------------------------------------------------------------------------
# Runs that measure nothing


def test_an_epoch_without_a_batch_is_refused_before_anything_is_written(tmp_path, capsys):
    # 16 glyph classes x 6: the training half is 8 classes, 48 images
    msg = cli_error(capsys, "run", *tiny(tmp_path, "batch_size=64"))
    assert "fold 0 trains on 48 images but batch_size is 64" in msg
    # with folds, each fold trains on its own subset: 3 folds of 8 classes train on 5, 5 and 6
    msg = cli_error(capsys, "run", *tiny(tmp_path, "batch_size=32", "cv_folds=3"))
    assert "fold 0 trains on 30 images but batch_size is 32" in msg
    msg = cli_error(capsys, "run", *tiny(tmp_path, "batch_size=32", "cv_folds=3", "sampler=m_per_class"))
    assert "fold 0 trains on 30 images but batch_size is 32" in msg
    # MPerClassSampler draws m=4 images from each of batch_size / 4 classes: 5 classes give 20 at most
    msg = cli_error(capsys, "run", *tiny(tmp_path, "batch_size=24", "cv_folds=3", "sampler=m_per_class"))
    assert "fold 0 trains on 5 classes" in msg and "MPerClassSampler" in msg and "batch_size is 24" in msg
    assert not (tmp_path / "runs").exists()


def test_under_torchrun_each_process_needs_its_share_of_a_batch(tmp_path):
    from pml_regularizers.bench.protocol.preflight import check_batches

    check_batches(48, None, 2, torch.arange(48) % 8, world=2)  # 24 images and one batch of 24 each
    expected = "fold 2 trains on 47 images but batch_size is 48 (24 on each of 2 processes)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_batches(48, None, 2, torch.arange(47) % 8, world=2)


class ShortSampler(torch.utils.data.Sampler):
    """A sampler that gives one sample fewer an epoch than a batch holds."""

    def __init__(self, labels, batch_size, length_before_new_iter):
        self.length = batch_size - 1

    def __iter__(self):
        return iter(range(self.length))

    def __len__(self):
        return self.length


def test_a_sampler_too_short_for_one_batch_is_refused(tmp_path, capsys):
    short = f"+sampler._target_={__name__}.ShortSampler"
    msg = cli_error(capsys, "run", *tiny(tmp_path, short))
    assert "fold 0: sampler ShortSampler gives 23 samples an epoch, fewer than a batch of 24" in msg
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        # 2 classes: one trains, one is tested; every retrieval metric would be 1.0
        (("dataset.options.num_classes=2",), "the test set holds 1 class"),
        # 3 classes: one trains; metric learning needs negatives
        (("dataset.options.num_classes=3",), "fold 0 trains on 1 class"),
        # 4 classes, 2 folds of the 2 training classes: each validates on one class
        (("dataset.options.num_classes=4", "cv_folds=2"), "fold 0 validates on 1 class"),
        # one image per class: no query has a same-class item to retrieve
        (("dataset.options.per_class=1",), "the test set holds 8 classes, none of them with 2 or more images"),
        (("cv_folds=9",), "cv_folds=9 needs at least 9 training classes; the training half holds 8"),
    ],
)
def test_splits_without_meaningful_metrics_are_refused(tmp_path, capsys, extra, expected):
    msg = cli_error(capsys, "run", *tiny(tmp_path, "batch_size=4", *extra))
    assert expected in msg
    assert not (tmp_path / "runs").exists()


def test_single_image_classes_are_named_in_a_warning(tmp_path, caplog):
    from pml_regularizers.bench.protocol.preflight import check_retrieval_sets

    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 5, 5])
    protocol = load_spec(tiny(tmp_path)).protocol
    with caplog.at_level(logging.WARNING):
        check_retrieval_sets(protocol, labels, test_classes=[2, 3, 4, 5], folds=[([0, 1], [])])
    assert "2 of the 4 test classes have a single image" in caplog.text  # classes 2 and 4


# ---------------------------------------------------------------------------------------------
# A failed run poisons its folder


def test_a_refused_command_leaves_nothing_and_the_corrected_one_runs(tmp_path, capsys):
    assert "device" in cli_error(capsys, "run", *tiny(tmp_path, "device=foo"))
    assert not (tmp_path / "runs").exists()
    if not torch.cuda.is_available():
        assert "CUDA is not available" in cli_error(capsys, "run", *tiny(tmp_path, "device=cuda"))
        assert not (tmp_path / "runs").exists()
    data = tmp_path / "images"
    args = [
        f"output_dir={tmp_path / 'runs'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "dataset=folder",
        "dataset.size=16",
        "embedding_size=8",
        "batch_size=12",
        "epochs=1",
        "seeds=1",
        "experiment=f",
    ]
    msg = cli_error(capsys, "run", *args, f"dataset.root={tmp_path / 'typo'}")
    assert f"{tmp_path / 'typo'} does not exist" in msg
    assert not (tmp_path / "runs").exists()
    image_folder(data)
    assert cli_main(["run", *args, f"dataset.root={data}"]) == 0
    assert (tmp_path / "runs" / "f" / "results.json").exists()


def test_a_folder_without_a_finished_epoch_is_taken_over(tmp_path, caplog):
    exp_dir = tmp_path / "runs" / EXPERIMENT
    # what an earlier version left behind when the device was wrong: a config and no epoch
    other = load_spec(tiny(tmp_path, "device=foo"))
    (exp_dir / "seed_0" / "fold_0" / "logs").mkdir(parents=True)
    (exp_dir / "config.yaml").write_text(other.to_yaml())
    with pytest.raises(UserError, match=f"nothing to evaluate: {exp_dir} holds no finished epoch"):
        run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=1")), evaluate_only=True)
    with caplog.at_level(logging.WARNING, logger="pml_regularizers.bench.results.folder"):
        run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=1")))
    assert f"taking over {exp_dir}" in caplog.text and "differs at: device" in caplog.text
    assert (exp_dir / "results.json").exists()


def test_a_folder_with_a_finished_epoch_and_another_config_is_refused(tmp_path, monkeypatch, capsys):
    interrupted_run(tmp_path, monkeypatch, 1)
    msg = cli_error(capsys, "run", *tiny(tmp_path, "seeds=1", "epochs=2"))
    assert "holds a run of a different config (differs at: epochs)" in msg


# ---------------------------------------------------------------------------------------------
# Corrupt or foreign checkpoints


def test_the_previous_checkpoint_is_kept_beside_the_latest(tmp_path):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=2")))
    fold = exp_dir / "seed_0" / "fold_0"
    latest = torch.load(fold / "checkpoint_latest.pt", weights_only=True)["state"]
    previous = torch.load(fold / "checkpoint_latest.backup.pt", weights_only=True)["state"]
    assert (latest["epoch"], previous["epoch"]) == (2, 1)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_lost_latest_checkpoint_resumes_from_the_previous_one(tmp_path, monkeypatch, caplog, damage):
    exp_dir = interrupted_run(tmp_path, monkeypatch, 2, "experiment=resumed")
    latest = exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt"
    if damage == "truncate":
        latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    else:  # a crash between moving the old checkpoint aside and moving the new one in
        latest.unlink()
    with caplog.at_level(logging.WARNING, logger="pml_regularizers.bench.protocol.fold_checkpoints"):
        resumed = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=3", "experiment=resumed")))
    assert str(latest) in caplog.text and "resuming from checkpoint_latest.backup.pt (epoch 1)" in caplog.text
    straight = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=3", "experiment=straight")))
    assert metrics_of(resumed) == metrics_of(straight)


class Foreign:
    """Not something a weights-only load may unpickle."""


def damage(kind, path, tmp_path):
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "missing-keys":
        torch.save({"models": {}}, path)
    elif kind == "foreign-object":
        torch.save({"x": Foreign()}, path)
    else:  # the checkpoint of a 16-d model in an 8-d experiment
        wide = load_spec(tiny(tmp_path, "seeds=1", "epochs=1", "embedding_size=16", "experiment=wide"))
        other = run_experiment(wide) / "seed_0" / "fold_0" / "checkpoint_latest.pt"
        path.write_bytes(other.read_bytes())
        if kind == "other-model":  # as written before checkpoints recorded their owner
            payload = torch.load(path, weights_only=True)
            del payload["owner"]
            torch.save(payload, path)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("truncated", "is truncated or not a PyTorch checkpoint"),
        ("missing-keys", "lacks the key(s) 'loss', 'optimizers', 'state'"),
        ("foreign-object", "holds Python objects besides tensors (tests.bench.test_runner_faults.Foreign)"),
        ("other-model", "does not match this experiment's models"),
        ("other-experiment", "belongs to seed 0, fold 0 of experiment wide (config digest "),
    ],
)
def test_an_unusable_checkpoint_without_a_backup_is_named(tmp_path, monkeypatch, capsys, kind, expected):
    exp_dir = interrupted_run(tmp_path, monkeypatch, 1)
    latest = exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt"
    damage(kind, latest, tmp_path)
    msg = cli_error(capsys, "run", *tiny(tmp_path, "seeds=1", "epochs=3"))
    assert msg.startswith(f"pml-bench: error: {latest} ")
    assert expected in msg and f"delete {latest.parent} to train fold 0 of seed 0 again" in msg
    assert "weights_only" not in msg


def test_evaluate_names_an_unusable_best_checkpoint(tmp_path, capsys):
    args = tiny(tmp_path, "seeds=1", "epochs=1", "cv_folds=2")
    exp_dir = run_experiment(load_spec(args))
    best = exp_dir / "seed_0" / "fold_1" / "checkpoint_best.pt"
    best.write_bytes(b"")
    msg = cli_error(capsys, "evaluate", *args)
    assert f"{best} is truncated or not a PyTorch checkpoint" in msg


def test_a_checkpoint_of_another_seed_is_refused_naming_both(tmp_path, capsys):
    """Seed 1's checkpoint replaced by seed 0's used to be accepted: the report showed +- 0.0000."""
    args = tiny(tmp_path, "seeds=2", "epochs=1")
    exp_dir = run_experiment(load_spec(args))
    digest = load_spec(args).digest
    seed_1 = exp_dir / "seed_1" / "fold_0" / "checkpoint_latest.pt"
    seed_1.write_bytes((exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt").read_bytes())
    owners = (
        f"{seed_1} belongs to seed 0, fold 0 of experiment {EXPERIMENT} (config digest {digest}), "
        f"not to seed 1, fold 0 of experiment {EXPERIMENT} (config digest {digest})"
    )
    assert owners in cli_error(capsys, "evaluate", *args)
    (exp_dir / "results.json").unlink()
    (exp_dir / "seed_1" / "result.json").unlink()
    assert owners in cli_error(capsys, "run", *args)  # resuming refuses it too
    with pytest.raises(UserError, match="belongs to seed 0"):
        trained_models(ExperimentFolder(exp_dir), ExperimentFolder(exp_dir).fold(1, 0))


def test_a_checkpoint_of_another_experiment_is_refused(tmp_path, capsys):
    args = tiny(tmp_path, "seeds=1", "epochs=1")
    exp_dir = run_experiment(load_spec(args))
    other = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=1", "experiment=other", "batch_size=12")))
    latest = exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt"
    latest.write_bytes((other / "seed_0" / "fold_0" / "checkpoint_latest.pt").read_bytes())
    msg = cli_error(capsys, "evaluate", *args)
    assert f"{latest} belongs to seed 0, fold 0 of experiment other (config digest " in msg
    assert f"not to seed 0, fold 0 of experiment {EXPERIMENT}" in msg


def test_checkpoints_written_before_owners_were_recorded_still_read(tmp_path):
    args = tiny(tmp_path, "seeds=1", "epochs=1")
    exp_dir = run_experiment(load_spec(args))
    latest = exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt"
    payload = torch.load(latest, weights_only=True)
    del payload["owner"]
    torch.save(payload, latest)
    before = metrics_of(exp_dir)
    assert metrics_of(run_experiment(load_spec(args), evaluate_only=True)) == before


def _leave_mark(path):  # what unpickling the payload below would run
    Path(path).write_text("ran")


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _leave_mark, (str(self.marker),)


def test_a_poisoned_test_embeddings_file_costs_its_plot_not_the_report(tmp_path, caplog, capsys):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=1")))
    embeddings = exp_dir / "seed_0" / "test_embeddings.pt"
    torch.save({"embeddings": Payload(tmp_path / "marker")}, embeddings)
    out = tmp_path / "report"
    with caplog.at_level(logging.WARNING, logger="pml_regularizers.bench.results.report"):
        assert cli_main(["report", str(exp_dir), "--out", str(out)]) == 0
    assert f"no test embedding map for {EXPERIMENT}: {embeddings} holds Python objects besides tensors" in caplog.text
    assert "weights_only" not in caplog.text and not (tmp_path / "marker").exists()
    assert (out / "report.md").is_file() and not list(out.glob("embeddings_*.png"))


# ---------------------------------------------------------------------------------------------
# Two runs on one folder


def test_a_second_run_on_a_folder_in_use_exits_naming_the_holder(tmp_path, capsys):
    args = tiny(tmp_path, "seeds=1", "epochs=4", "dataset.options.per_class=20")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "pml_regularizers.bench", "run", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = tmp_path / "runs" / EXPERIMENT / ".pml-bench.lock"
        deadline = time.time() + 120
        while (
            time.time() < deadline
            and first.poll() is None
            and str(first.pid) not in (lock.read_text() if lock.exists() else "")
        ):
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second started"
        msg = cli_error(capsys, "run", *args)
        assert f"{tmp_path / 'runs' / EXPERIMENT} is in use by PID {first.pid} on host {socket.gethostname()}" in msg
        assert "(command pml-bench run " in msg
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # the killed holder's lock went with it: the same command now resumes and finishes
    assert cli_main(["run", *args]) == 0


def test_the_lock_is_released_when_a_run_fails(tmp_path, monkeypatch):
    interrupted_run(tmp_path, monkeypatch, 1)
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=3")))
    assert (exp_dir / "results.json").exists()


# ---------------------------------------------------------------------------------------------
# Tracebacks instead of messages


def test_wrong_kind_dataset_roots_are_named_as_such(tmp_path, capsys):
    a_file = tmp_path / "data.txt"
    a_file.write_text("x")
    for name in ("omniglot", "folder", "cub", "cars196", "sop"):
        msg = cli_error(capsys, "run", f"output_dir={tmp_path / 'runs'}", f"dataset={name}", f"dataset.root={a_file}")
        assert f"{a_file} is a file, not a folder" in msg, name
    msg = cli_error(capsys, "run", f"output_dir={tmp_path / 'runs'}", "dataset=features", f"dataset.root={tmp_path}")
    assert f"{tmp_path} is a folder, not a file" in msg
    assert not (tmp_path / "runs").exists()


def test_evaluate_without_finished_training_is_refused_and_creates_nothing(tmp_path, monkeypatch, capsys):
    msg = cli_error(capsys, "evaluate", *tiny(tmp_path, "seeds=1", "epochs=3"))
    assert f"nothing to evaluate: {tmp_path / 'runs' / EXPERIMENT} holds no experiment" in msg
    assert not (tmp_path / "runs").exists()
    exp_dir = interrupted_run(tmp_path, monkeypatch, 1)
    msg = cli_error(capsys, "evaluate", *tiny(tmp_path, "seeds=1", "epochs=3"))
    assert f"{exp_dir / 'seed_0' / 'fold_0'} has not finished training (epoch 1 of 3)" in msg
    assert not (exp_dir / "seed_0" / "result.json").exists()


def test_a_grayscale_pipeline_under_a_three_channel_trunk_is_refused_before_anything_is_written(tmp_path, capsys):
    """It used to end in a traceback from the first convolution, after config.yaml was written."""
    root = tmp_path / "images"
    image_folder(root)
    msg = cli_error(
        capsys,
        "run",
        f"output_dir={tmp_path / 'runs'}",
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.pipeline=grayscale",
        "dataset.size=16",
        "trunk=torchvision",
        "trunk.name=resnet18",
    )
    assert "dataset.channels is 3 but dataset.pipeline=grayscale serves 1-channel images" in msg
    assert not (tmp_path / "runs").exists()


def test_an_undecodable_image_met_by_a_dataloader_worker_is_one_error_line(tmp_path, capfd):
    """A file that cannot be decoded, served by a worker in the middle of an epoch, used to end in a
    traceback after config.yaml was written."""
    pytest.importorskip("torchvision")
    root = tmp_path / "images"
    image_folder(root)
    bad = root / "class3" / "2.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    args = [
        f"output_dir={tmp_path / 'runs'}",
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.size=16",
        "dataset.resize=20",
        "trunk=torchvision",
        "trunk.name=resnet18",
        "embedding_size=8",
        "batch_size=8",
        "epochs=1",
        "seeds=1",
        "num_workers=2",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pml_regularizers.bench", "run", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("pml-bench: error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"pml-bench: error: cannot decode image {bad}: ")
    assert "list every problem file with pml-bench check-data" in errors[0]


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    msg = cli_error(capsys, "run", *tiny(tmp_path))
    assert f"output_dir: {tmp_path / 'runs'} is a file, not a folder" in msg


def test_report_input_errors_are_one_line(tmp_path, capsys):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=1")))
    out = tmp_path / "report"
    msg = cli_error(capsys, "report", str(exp_dir), "--baseline", "nope", "--out", str(out))
    assert f"--baseline must name one of the experiments with test records ({EXPERIMENT}), got 'nope'" in msg
    assert not out.exists()
    msg = cli_error(capsys, "report", str(tmp_path / "missing"))
    assert f"no results.json in experiment folder {tmp_path / 'missing'}" in msg
    (exp_dir / "results.json").write_text("{")
    assert "is not valid JSON" in cli_error(capsys, "report", str(exp_dir), "--out", str(out))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["no_such_key=1"], "unknown key no_such_key; the keys of the config's top level: batch_size, "),
        (["dataset.options.num_classes=1"], "num_classes must be an int >= 2, got 1"),
        (
            ["dataset.options.num_classes=4", "+dataset.options.colour=red"],
            "dataset=glyphs: dataset 'glyphs' has no option colour; its options: num_classes, per_class, seed",
        ),
        (["device=cuda:x"], "device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got 'cuda:x'"),
        (["experiment=../elsewhere"], "experiment must be null or a folder name (no '/'"),
    ],
)
def test_other_user_errors_are_one_line(tmp_path, capsys, overrides, expected):
    assert expected in cli_error(
        capsys, "run", f"output_dir={tmp_path / 'runs'}", f"dataset.cache_dir={tmp_path / 'cache'}", *overrides
    )
    assert not (tmp_path / "runs").exists()


def test_the_python_api_raises_instead_of_exiting(tmp_path):
    with pytest.raises(ConfigError, match="fold 0 trains on 48 images but batch_size is 64"):
        run_experiment(load_spec(tiny(tmp_path, "batch_size=64")))
    from pml_regularizers.bench import UserError

    with pytest.raises(UserError, match="nothing to evaluate"):
        run_experiment(load_spec(tiny(tmp_path)), evaluate_only=True)
