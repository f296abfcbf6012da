"""The benchmark runner end to end on a tiny offline glyph set: configs, outputs, no recomputation,
kill-and-resume equality, cross-validation records, evaluate-only, and config errors."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pml_regularizers.bench import (
    ConfigError,
    RunSpec,
    load_experiment_data,
    load_spec,
    run_experiment,
    validation_curves,
)
from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.data import class_disjoint_split
from pml_regularizers.bench.results.markdown import validation_curve_table

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def tiny(tmp_path, *extra):
    return [
        f"output_dir={tmp_path / 'runs'}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "dataset.size=16",
        "dataset.options.num_classes=16",
        "dataset.options.per_class=6",
        "embedding_size=8",
        "batch_size=24",
        "epochs=2",
        "seeds=2",
        *extra,
    ]


def metrics_of(exp_dir, split="test"):
    data = json.loads((Path(exp_dir) / "results.json").read_text())
    return {(r["seed"], r["embedding"]): r["metrics"] for r in data["records"] if r["split"] == split}


def test_run_writes_results_and_is_not_recomputed(tmp_path):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "regularizer=skewed_mean")))
    assert exp_dir.name == "glyphs-proxy_anchor-skewed_mean-linear"
    results = metrics_of(exp_dir)
    assert set(results) == {(0, "single"), (1, "single")}
    for m in results.values():
        assert {"mean_average_precision_at_r", "r_precision", "precision_at_1", "recall_at_8", "NMI"} <= set(m)
        assert 0.0 <= m["mean_average_precision_at_r"] <= 1.0
    assert (exp_dir / "config.yaml").exists()
    (log,) = (exp_dir / "seed_0" / "fold_0" / "logs").glob("*weight_regularizer_SkewedMeanRegularizer.csv")
    assert {"skewed_mean", "min_distance"} <= set(log.read_text().splitlines()[0].split(","))
    emb = torch.load(exp_dir / "seed_0" / "test_embeddings.pt", weights_only=True)
    assert emb["embeddings"].shape == (len(emb["labels"]), 8)
    stamp = (exp_dir / "results.json").stat().st_mtime_ns
    run_experiment(load_spec(tiny(tmp_path, "regularizer=skewed_mean")))
    assert (exp_dir / "results.json").stat().st_mtime_ns == stamp


def test_cross_validation_reports_separated_and_concatenated(tmp_path):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "cv_folds=2", "seeds=1")))
    results = metrics_of(exp_dir)
    assert set(results) == {(0, "separated"), (0, "concatenated")}
    emb = torch.load(exp_dir / "seed_0" / "test_embeddings.pt", weights_only=True)
    assert emb["embeddings"].shape[1] == 2 * 8  # two folds' 8-d embeddings side by side
    best_scores = []
    for fold in (0, 1):
        assert (exp_dir / "seed_0" / f"fold_{fold}" / "checkpoint_best.pt").exists()
        state = torch.load(exp_dir / "seed_0" / f"fold_{fold}" / "checkpoint_latest.pt", weights_only=True)
        best_scores.append(state["state"]["best_score"])
    expected_device = "cpu" if not torch.cuda.is_available() else f"cuda: {torch.cuda.get_device_name(0)}"
    assert json.loads((exp_dir / "results.json").read_text())["device"] == expected_device  # device=auto
    val = metrics_of(exp_dir, "val")
    assert set(val) == {(0, "separated")}
    assert val[0, "separated"]["mean_average_precision_at_r"] == pytest.approx(sum(best_scores) / 2)
    # the report's per-epoch validation table averages the two folds' tester logs
    per_epoch = {}
    for fold in (0, 1):
        (log,) = (exp_dir / "seed_0" / f"fold_{fold}" / "logs").glob("accuracies_*_VAL_vs_self.csv")
        for row in csv.DictReader(log.open()):
            per_epoch.setdefault(row["epoch"], []).append(float(row["mean_average_precision_at_r_level0"]))
    table = validation_curve_table(validation_curves([exp_dir])).splitlines()
    assert table[0] == "| Experiment | " + " | ".join(per_epoch) + " | runs |"
    expected = [f"{sum(v) / len(v):.4f}" for v in per_epoch.values()]
    assert table[2] == f"| {exp_dir.name} | " + " | ".join(expected) + " | 2 |"
    assert max(max(v) for v in per_epoch.values()) >= max(best_scores) - 1e-12


def test_validation_only_run_never_touches_the_test_classes(tmp_path, monkeypatch):
    from pml_regularizers.bench.protocol import runner

    embedded = []
    monkeypatch.setattr(runner, "embed", lambda *a, **k: embedded.append(1))
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "cv_folds=2", "test=false")))
    assert not embedded
    assert metrics_of(exp_dir) == {}
    assert set(metrics_of(exp_dir, "val")) == {(0, "separated"), (1, "separated")}
    assert not (exp_dir / "seed_0" / "test_embeddings.pt").exists()
    with pytest.raises(ConfigError, match="cv_folds must be an int >= 2 when test=false"):
        load_spec(["test=false"])


def test_train_with_classifier_trains_and_logs_the_classifier_loss(tmp_path):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "trainer=train_with_classifier", "loss=contrastive")))
    assert exp_dir.name == "glyphs-contrastive-linear-train_with_classifier"
    ckpt = torch.load(exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt", weights_only=True)
    assert ckpt["models"]["classifier"]["weight"].shape == (8, 8)  # 8 training classes x 8-d
    assert "classifier_optimizer" in ckpt["optimizers"]
    (csv,) = (exp_dir / "seed_0" / "fold_0" / "logs").glob("*loss_histories*.csv")
    header = csv.read_text().splitlines()[0].split(",")
    assert "classifier_loss" in header and "metric_loss" in header
    assert metrics_of(exp_dir)[0, "single"]["precision_at_1"] > 0


def test_patience_stops_a_fold_that_stops_improving(tmp_path):
    # lr 0 with frozen batch-norm statistics: the model never changes, so validation MAP@R never
    # beats epoch 1 and patience 1 ends each fold after epoch 2 of 4.
    frozen = ("optimizer.lr=0", "optimizer.loss_lr=0", "freeze_trunk_bn=true")
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "cv_folds=2", "epochs=4", "patience=1", *frozen)))
    for fold in (0, 1):
        state = torch.load(exp_dir / "seed_0" / f"fold_{fold}" / "checkpoint_latest.pt", weights_only=True)["state"]
        assert (state["done"], state["epoch"], state["best_epoch"]) == (True, 2, 1)


def test_evaluate_only_reproduces_the_test_metrics(tmp_path):
    cfg = load_spec(tiny(tmp_path, "seeds=1"))
    exp_dir = run_experiment(cfg)
    before = metrics_of(exp_dir)
    run_experiment(cfg, evaluate_only=True)
    assert metrics_of(exp_dir) == before


def test_load_experiment_data_reads_a_saved_config_as_the_run_did(tmp_path):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=1")))
    data = load_experiment_data(RunSpec.from_config(OmegaConf.load(exp_dir / "config.yaml")).data)
    assert sorted(set(data.labels.tolist())) == list(range(16))
    assert len(data.labels) == 16 * 6
    test = torch.load(exp_dir / "seed_0" / "test_embeddings.pt", weights_only=True)
    _, test_classes = class_disjoint_split(data.labels)
    assert torch.equal(test["labels"], data.subset(test_classes).labels)


def test_sigkill_mid_run_then_resume_gives_the_same_metrics(tmp_path):
    args = tiny(tmp_path, "seeds=1", "epochs=4", "dataset.options.per_class=20", "experiment=killed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pml_regularizers.bench", "run", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "runs" / "killed" / "seed_0" / "fold_0" / "checkpoint_latest.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=True)["state"]
            if state["epoch"] >= 1:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["state"]["epoch"]
    assert 1 <= killed_at < 4
    assert not (tmp_path / "runs" / "killed" / "results.json").exists()

    resumed = run_experiment(load_spec(args))
    straight = run_experiment(load_spec([*args[:-1], "experiment=straight"]))
    assert metrics_of(resumed) == metrics_of(straight)


def test_config_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(ConfigError, match="Available options in 'loss'"):
        load_spec(["loss=no_such_loss"])
    with pytest.raises(ConfigError, match="unknown key no_such_key; the keys of the config's top level"):
        load_spec(["no_such_key=1"])
    with pytest.raises(ConfigError, match="dataset.root"):
        load_spec(["dataset=omniglot"])
    with pytest.raises(ConfigError, match="seeds must be an int >= 1"):
        load_spec(["seeds=0"])
    with pytest.raises(ConfigError, match=r"patience must be null when cv_folds=0 .*, got 2"):
        load_spec(["cv_folds=0", "patience=2"])
    with pytest.raises(ConfigError, match="regularizer.attach=weight needs a loss with class weights"):
        run_experiment(load_spec(tiny(tmp_path, "loss=contrastive", "regularizer=skewed_mean")))
    assert cli_main(["run", "loss=no_such_loss"]) == 2
    assert "Available options" in capsys.readouterr().err


def test_missing_dataset_folder_stops_before_anything_is_written(tmp_path):
    from pml_regularizers.bench import UserError

    with pytest.raises(UserError, match=f"dataset=omniglot: Omniglot root {tmp_path / 'nope'} does not exist") as info:
        run_experiment(load_spec([f"output_dir={tmp_path}", "dataset=omniglot", f"dataset.root={tmp_path / 'nope'}"]))
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert sorted(tmp_path.iterdir()) == []


def test_resuming_a_folder_with_another_config_is_refused(tmp_path):
    run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=1", "experiment=x")))
    with pytest.raises(ConfigError, match="differs at: epochs"):
        run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=2", "experiment=x")))


def test_reports_name_the_commands_that_made_them(tmp_path, capsys):
    args = tiny(tmp_path, "seeds=1", "epochs=1")
    assert cli_main(["run", *args]) == 0
    exp_dir = tmp_path / "runs" / "glyphs-proxy_anchor-linear"
    results = json.loads((exp_dir / "results.json").read_text())
    assert results["command"] == "pml-bench run " + " ".join(args)
    out = tmp_path / "report"
    assert cli_main(["report", str(exp_dir), "--title", "Tiny check", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.startswith("# Tiny check\n")
    assert f"pml-bench report {exp_dir} --title 'Tiny check' --out {out}" in text
    assert results["command"] in text


def test_flow_embedder_with_the_jacobian_determinant_regularizer(tmp_path):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", "embedder=flow", "regularizer=jacobian_determinant")))
    assert exp_dir.name == "glyphs-proxy_anchor-jacobian_determinant-flow"
    logs = exp_dir / "seed_0" / "fold_0" / "logs"
    (csv,) = logs.glob("metric_loss_ProxyAnchorLoss__modules_embedding_regularizer_JacobianDeterminant*.csv")
    header = csv.read_text().splitlines()[0].split(",")
    assert {"logdet_mean", "logdet_min", "logdet_max"} <= set(header)
    ckpt = torch.load(exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt", weights_only=True)
    assert not any("blocks" in k for k in ckpt["loss"])  # the flow lives in the embedder only
    assert any("blocks" in k for k in ckpt["models"]["embedder"])
    with pytest.raises(ConfigError, match="embedder must be a FlowEmbedder"):
        run_experiment(load_spec(tiny(tmp_path, "regularizer=jacobian_determinant")))


def test_the_full_determinant_method_wraps_the_loss_with_a_dueling_flow(tmp_path):
    full = ("embedder=dueling_flow", "regularizer=jacobian_determinant_loss")
    exp_dir = run_experiment(load_spec(tiny(tmp_path, "seeds=1", *full)))
    assert exp_dir.name == "glyphs-proxy_anchor-jacobian_determinant_loss-dueling_flow"
    (csv,) = (exp_dir / "seed_0" / "fold_0" / "logs").glob("metric_loss_JacobianDeterminantLoss.csv")
    header, *rows = [line.split(",") for line in csv.read_text().splitlines()]
    stats = dict(zip(header, rows[-1]))
    for name in ("logdet_mean", "interpolated_logdet_mean", "branch2_logdet_mean"):
        assert math.isfinite(float(stats[name]))
    assert float(stats["num_interpolated"]) > 0
    # branch 2 starts as the identity (log-det exactly 0) and only the reward trains it
    assert [float(r[header.index("branch2_logdet_mean")]) for r in rows[:1]] == [0.0]
    assert float(stats["branch2_logdet_mean"]) > 0
    ckpt = torch.load(exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt", weights_only=True)
    assert list(ckpt["loss"]) == ["loss.proxies"]  # both branches live in the embedder only
    assert {k.split(".")[0] for k in ckpt["models"]["embedder"]} == {"branch1", "branch2"}
    with pytest.raises(ConfigError, match="reward='hinge' needs reward_target > 0, got 0.0"):
        run_experiment(load_spec(tiny(tmp_path, *full, "regularizer.reward=hinge", "experiment=hinge")))
    with pytest.raises(ConfigError, match="reward_weight != 0 needs a DuelingFlowEmbedder"):
        run_experiment(load_spec(tiny(tmp_path, "regularizer=jacobian_determinant_loss", "embedder=flow")))
    with pytest.raises(ConfigError, match="embedder must be a FlowEmbedder or DuelingFlowEmbedder"):
        run_experiment(load_spec(tiny(tmp_path, "regularizer=jacobian_determinant_loss")))


def test_the_runner_builds_the_same_wrapped_loss_as_the_python_api(tmp_path):
    from pytorch_metric_learning.losses import ProxyAnchorLoss

    from pml_regularizers import DuelingFlowEmbedder, JacobianDeterminantLoss
    from pml_regularizers.bench.models.build import build_loss

    cfg = load_spec(
        tiny(
            tmp_path,
            "embedder=dueling_flow",
            "regularizer=jacobian_determinant_loss",
            "regularizer.interpolation_eps=0.3",
            "regularizer.reward=signed",
        )
    )
    embedder = DuelingFlowEmbedder(6, 8, num_blocks=2, hidden_features=16)
    built = build_loss(cfg.models, num_classes=5, embedding_size=8, embedder=embedder)
    by_hand = JacobianDeterminantLoss(
        ProxyAnchorLoss(5, 8, margin=0.1, alpha=32),
        embedder,
        penalty_weight=0.1,
        reward_weight=0.1,
        penalty="square",
        reward="signed",
        interpolation_eps=0.3,
    )
    by_hand.loss.proxies.data.copy_(built.loss.proxies.data)
    x, labels = torch.randn(12, 6), torch.arange(12) % 5
    values = []
    for loss in (built, by_hand):
        torch.manual_seed(0)  # the same interpolation partners and weights
        values.append(loss(embedder(x), labels))
    torch.testing.assert_close(values[0], values[1])
    assert built.embedder is embedder
    for name in ("penalty", "penalty_weight", "target", "reward", "reward_weight", "reward_target"):
        assert getattr(built, name) == getattr(by_hand, name), name


def test_a_dvml_folder_saved_without_loss_weights_resumes_as_the_run_did(tmp_path):
    """The dvml trainer group states PML's loss_weights (a search varies kl_loss); a folder saved
    before, with none, ran with 1 for each term and is taken for that config, not retrained."""
    from pml_regularizers.bench.spec.run_spec import config_digest

    args = ["seeds=1", "epochs=1", "loss=triplet", "miner=triplet_margin", "sampler=m_per_class"]
    overrides = tiny(tmp_path, *args, "embedder=dvml", "trainer=dvml")
    exp_dir = run_experiment(load_spec(overrides))
    saved = OmegaConf.load(exp_dir / "config.yaml")
    assert OmegaConf.to_container(saved.trainer.loss_weights) == dict.fromkeys(
        ["kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss"], 1.0
    )
    del saved.trainer["loss_weights"]
    OmegaConf.save(saved, exp_dir / "config.yaml")
    assert config_digest(OmegaConf.to_container(saved)) == load_spec(overrides).digest
    assert (
        config_digest(OmegaConf.to_container(saved))
        != load_spec([*overrides, "trainer.loss_weights.kl_loss=0.5"]).digest
    )
    finished = (exp_dir / "results.json").stat().st_mtime_ns
    assert run_experiment(load_spec(overrides)) == exp_dir
    assert (exp_dir / "results.json").stat().st_mtime_ns == finished


def test_dvml_trainer_logs_its_four_terms(tmp_path):
    args = ["seeds=1", "loss=triplet", "miner=triplet_margin", "sampler=m_per_class"]
    exp_dir = run_experiment(load_spec(tiny(tmp_path, *args, "embedder=dvml", "trainer=dvml", "trainer.num_samples=3")))
    assert exp_dir.name == "glyphs-triplet-triplet_margin-dvml-dvml"
    (csv,) = (exp_dir / "seed_0" / "fold_0" / "logs").glob("loss_histories.csv")
    header = csv.read_text().splitlines()[0].split(",")
    assert {"kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss"} <= set(header)
    emb = torch.load(exp_dir / "seed_0" / "test_embeddings.pt", weights_only=True)["embeddings"]
    assert emb.shape[1] == 8  # z_I only at test time
    with pytest.raises(ConfigError, match="trainer=dvml needs embedder=dvml"):
        run_experiment(load_spec(tiny(tmp_path, *args, "trainer=dvml")))
