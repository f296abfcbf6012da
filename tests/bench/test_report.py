"""Report: intervals and paired differences against hand-computed values, the markdown layout,
record-keeper CSV parsing (from a real PML training and from hand-written files), and the PNGs."""

import json
import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses, trainers
from pytorch_metric_learning.utils import logging_presets

from pml_regularizers.bench import ExperimentFolder, write_report
from pml_regularizers.bench.results.markdown import device_lines, markdown_table, validation_curve_table
from pml_regularizers.bench.results.plots import plot_embedding_map, plot_metric_comparison, plot_training_curves
from pml_regularizers.bench.results.stats import summarize, t_interval
from pml_regularizers.bench.results.training_logs import load_loss_history, mean_loss_curve, validation_curves

from .report_records import MAP, P1, fake_records, write_experiment, write_val_log

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024


# t_interval -----------------------------------------------------------------------------------


def test_t_interval_hand_computed():
    mean, half = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    # t_{0.975, 2} = 4.302653, s = 1, sqrt(3)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert half == pytest.approx(2.484138, rel=1e-6)
    # t_{0.95, 2} = 2.919986
    assert t_interval([1, 2, 3], confidence=0.90)[1] == pytest.approx(2.919986 / math.sqrt(3), rel=1e-6)
    # n = 8, s = sqrt(32 / 7), t_{0.975, 7} = 2.364624
    mean, half = t_interval([2, 4, 4, 4, 5, 5, 7, 9])
    assert mean == 5.0
    assert half == pytest.approx(2.364624 * math.sqrt(32 / 7) / math.sqrt(8), rel=1e-6)


def test_t_interval_single_value_and_errors():
    mean, half = t_interval([0.7])
    assert mean == 0.7 and math.isnan(half)
    with pytest.raises(ValueError, match="values"):
        t_interval([])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1, 2], confidence=95)


# summarize ------------------------------------------------------------------------------------


def test_summarize_pairs_by_seed():
    rows = {(r.experiment, r.metric): r for r in summarize(fake_records(), baseline="base")}
    base, reg = rows[("base", MAP)], rows[("reg", MAP)]
    assert (base.n, base.diff_mean, base.diff_half_width, base.n_pairs) == (3, None, None, 0)
    assert base.mean == pytest.approx(0.42)
    assert base.half_width == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert reg.n == 4 and reg.mean == pytest.approx(0.46)
    # sample sd of [0.43, 0.44, 0.47, 0.50] is sqrt(0.003 / 3); t_{0.975, 3} = 3.182446
    assert reg.half_width == pytest.approx(3.182446 * math.sqrt(0.001) / 2, rel=1e-6)
    # paired differences on seeds 0..2: [0.03, 0.02, 0.03]; sd = sqrt((2 * (1/300)^2 + (2/300)^2) / 2)
    assert reg.n_pairs == 3 and reg.baseline == "base"
    assert reg.diff_mean == pytest.approx(0.08 / 3)
    sd = math.sqrt((2 * (1 / 300) ** 2 + (2 / 300) ** 2) / 2)
    assert reg.diff_half_width == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-6)


def test_summarize_without_baseline_filters_split_and_orders_metrics():
    rows = summarize(fake_records())
    assert [(r.experiment, r.metric) for r in rows] == [("base", MAP), ("base", P1), ("reg", MAP), ("reg", P1)]
    assert all(r.diff_mean is None and r.baseline is None for r in rows)
    val = summarize(fake_records(), split="val")
    assert [r.mean for r in val] == pytest.approx([0.99, 0.99])


def test_summarize_no_shared_seed_and_missing_baseline():
    records = fake_records()
    for r in records:
        if r["experiment"] == "reg":
            r["seed"] += 10
    reg = [r for r in summarize(records, baseline="base") if r.experiment == "reg"]
    assert all(r.diff_mean is None and r.n_pairs == 0 for r in reg)
    text = markdown_table(summarize(records, baseline="base"), metrics=[MAP])
    assert "| reg | concatenated | 4 | 0.4600 ± 0.0503 (Δ n/a: no shared seed) |" in text
    with pytest.raises(ValueError, match="baseline"):
        summarize(records, baseline="nope")


def test_summarize_rejects_duplicate_seed():
    records = fake_records()
    records.append(dict(records[0]))
    with pytest.raises(ValueError, match="two values"):
        summarize(records)


# markdown -------------------------------------------------------------------------------------


def test_markdown_table_layout_and_numbers():
    text = markdown_table(summarize(fake_records(), baseline="base"))
    lines = text.strip().split("\n")
    assert lines[0] == "| Experiment | Embedding | Seeds | MAP@R (Δ vs base) | P@1 (Δ vs base) |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2].startswith("| base | concatenated | 3 | 0.4200 ± 0.0497 | 0.6100 ± ")
    # reg: mean 0.46, half 0.0503; Δ 0.02667 ± 0.01434 over 3 of its 4 seeds
    assert "| reg | concatenated | 4 | 0.4600 ± 0.0503 (Δ +0.0267 ± 0.0143, 3 pairs) |" in lines[3]
    assert len(lines) == 4


def test_markdown_table_metric_subset_single_seed_and_unknown_metric():
    records = [
        {
            "experiment": "a",
            "seed": 0,
            "split": "test",
            "embedding": "single",
            "metrics": {MAP: 0.5, P1: 0.25, "recall_at_8": 0.9},
        }
    ]
    rows = summarize(records)
    text = markdown_table(rows, metrics=["recall_at_8", MAP])
    assert text.split("\n")[0] == "| Experiment | Embedding | Seeds | R@8 | MAP@R |"
    assert "| a | single | 1 | 0.9000 ± n/a | 0.5000 ± n/a |" in text
    with pytest.raises(ValueError, match="metrics"):
        markdown_table(rows, metrics=["NMI"])


def test_markdown_negative_difference_sign():
    records = fake_records()
    for r in records:
        if r["experiment"] == "reg":
            r["metrics"][MAP] -= 0.1
    text = markdown_table(summarize(records, baseline="base"), metrics=[MAP])
    assert "(Δ -0.0733 ± 0.0143, 3 pairs)" in text


# devices --------------------------------------------------------------------------------------


def test_device_lines_count_devices_and_unrecorded_ones(tmp_path):
    assert device_lines([None, None]) == []
    assert device_lines(["cpu", "cuda: NVIDIA H100", "cpu", None]) == [
        "Run on: cpu (2 experiments), cuda: NVIDIA H100 (1 experiment), not recorded (1 experiment).",
        "",
    ]
    exp = write_experiment(tmp_path, "gpu", fake_records()[:2])
    data = json.loads((exp / "results.json").read_text())
    (exp / "results.json").write_text(json.dumps({**data, "device": "cuda: NVIDIA H100"}))
    text = write_report([exp], tmp_path / "report")
    assert "Run on: cuda: NVIDIA H100 (1 experiment)." in text


# record-keeper CSV ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_loss_csv(tmp_path_factory):
    """loss_histories.csv from a short MetricLossOnly training logged through PML's presets."""
    root = tmp_path_factory.mktemp("rk")
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(48, 6, generator=g), torch.arange(48) % 4)
    trunk = torch.nn.Linear(6, 4)
    record_keeper, _, _ = logging_presets.get_record_keeper(str(root / "logs"), str(root / "tb"))
    hooks = logging_presets.get_hook_container(record_keeper, log_freq=1)
    trainer = trainers.MetricLossOnly(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
        batch_size=12,
        loss_funcs={"metric_loss": losses.TripletMarginLoss()},
        dataset=data,
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        dataloader_num_workers=0,
    )
    trainer.train(num_epochs=1)
    record_keeper.save_records()
    trainer.train(start_epoch=2, num_epochs=2)
    record_keeper.save_records()
    return root / "logs" / "loss_histories.csv"


def test_real_record_keeper_csv(real_loss_csv):
    text = real_loss_csv.read_text()
    assert text.startswith("~iteration~,metric_loss,total_loss")
    history = load_loss_history(real_loss_csv)
    assert set(history) == {"iteration", "metric_loss", "total_loss"}
    assert len(history["iteration"]) == 8  # 2 epochs of 4 iterations, logged every iteration
    assert np.all(np.diff(history["iteration"]) > 0)
    assert np.allclose(history["metric_loss"], history["total_loss"])
    first_row = text.split("\n")[1].split(",")
    assert history["total_loss"][0] == pytest.approx(float(first_row[2]))


def test_hand_written_csv_with_new_header_and_bad_cells(tmp_path):
    path = tmp_path / "loss_histories.csv"
    path.write_text(
        "~iteration~,metric_loss,total_loss\n0,2.0,2.0\n50,1.5,1.5\n"
        "~iteration~,metric_loss,total_loss,weight_reg_loss\n100,1.0,1.25,0.5\n150,,0.9,nope\n"
    )
    h = load_loss_history(path)
    assert h["iteration"].tolist() == [0, 50, 100, 150]
    assert h["total_loss"].tolist() == [2.0, 1.5, 1.25, 0.9]
    assert np.isnan(h["weight_reg_loss"][:2]).all() and h["weight_reg_loss"][2] == 0.5
    assert np.isnan(h["weight_reg_loss"][3]) and np.isnan(h["metric_loss"][3])
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="~iteration~"):
        load_loss_history(tmp_path / "bad.csv")


def test_mean_loss_curve_over_seeds_and_folds(tmp_path):
    exp = write_experiment(
        tmp_path,
        "a",
        [],
        csv_texts=[
            "~iteration~,total_loss\n0,4.0\n10,2.0\n",
            "~iteration~,total_loss\n0,2.0\n10,1.0\n20,0.5\n",
            "~iteration~,metric_loss\n0,9.0\n",  # no total_loss: skipped
        ],
    )
    fold_logs = exp / "seed_3" / "fold_0" / "logs"
    fold_logs.mkdir(parents=True)
    (fold_logs / "loss_histories.csv").write_text("~iteration~,total_loss\n0,3.0\n10,3.0\n")
    assert [p.relative_to(exp).as_posix() for p in ExperimentFolder(exp).loss_history_files()] == [
        "seed_0/logs/loss_histories.csv",
        "seed_1/logs/loss_histories.csv",
        "seed_2/logs/loss_histories.csv",
        "seed_3/fold_0/logs/loss_histories.csv",
    ]
    iterations, mean, n = mean_loss_curve(exp)
    assert n == 3
    assert iterations.tolist() == [0, 10, 20]
    assert mean.tolist() == pytest.approx([3.0, 2.0, 0.5])
    assert mean_loss_curve(exp, column="weight_reg_loss") is None


def test_mean_curve_of_a_regularizer_stat_log(tmp_path):
    """Any record-keeper CSV, found by a glob in each run's logs folder (seed, then fold)."""
    exp = tmp_path / "reg"
    for seed, fold, rows in [(0, 0, "0,1.0\n5,3.0\n"), (0, 1, "0,3.0\n5,5.0\n"), (1, 0, "0,2.0\n")]:
        logs = exp / f"seed_{seed}" / f"fold_{fold}" / "logs"
        logs.mkdir(parents=True)
        name = "metric_loss_ProxyAnchorLoss__modules_embedding_regularizer_JacobianDeterminantRegularizer.csv"
        (logs / name).write_text("~iteration~,target,logdet_mean\n" + rows.replace(",", ",0.0,"))
        (logs / "embedding_regularizer_JacobianDeterminantRegularizer__modules_distance_LpDistance.csv").write_text(
            "~iteration~,p\n0,2\n"
        )
    pattern = "*_JacobianDeterminantRegularizer.csv"
    assert len(ExperimentFolder(exp).loss_history_files(pattern)) == 3
    assert ExperimentFolder(exp).loss_history_files() == []
    iterations, mean, n = mean_loss_curve(exp, "logdet_mean", pattern)
    assert n == 3
    assert iterations.tolist() == [0, 5]
    assert mean.tolist() == pytest.approx([2.0, 4.0])
    plot_training_curves([exp], tmp_path / "logdet.png", "logdet_mean", pattern)
    assert_png(tmp_path / "logdet.png")


def test_validation_curve_table_means_over_runs_and_early_stopping(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_val_log(a, 0, 0, [0.1, 0.3, 0.5])
    write_val_log(a, 0, 1, [0.3, 0.5])  # stopped early: epoch 3 averages the other run only
    write_val_log(a, 1, 0, [0.2, 0.4, 0.8])
    write_val_log(b, 0, 0, [0.25])
    curves = validation_curves([a, b])
    assert [(c.experiment, c.epochs, c.runs) for c in curves] == [("a", [1, 2, 3], 3), ("b", [1], 1)]
    assert curves[0].values == pytest.approx([0.2, 0.4, 0.65])
    assert validation_curve_table(curves).splitlines() == [
        "| Experiment | 1 | 2 | 3 | runs |",
        "|---|---|---|---|---|",
        "| a | 0.2000 | 0.4000 | 0.6500 | 3 |",
        "| b | 0.2500 |  |  | 1 |",
    ]
    (tmp_path / "none").mkdir()
    assert validation_curves([tmp_path / "none"]) == []
    assert validation_curve_table([]) is None


# plots and report -----------------------------------------------------------------------------


def test_plot_metric_comparison_png(tmp_path):
    rows = summarize(fake_records(), baseline="base")
    plot_metric_comparison(rows, tmp_path / "sub" / "m.png")
    assert_png(tmp_path / "sub" / "m.png")
    with pytest.raises(ValueError, match="metrics"):
        plot_metric_comparison(rows, tmp_path / "x.png", metrics=["NMI"])


def test_plot_training_curves_png_with_real_csv_and_missing_data(tmp_path, real_loss_csv):
    exp = write_experiment(tmp_path, "real", [], csv_texts=[real_loss_csv.read_text()] * 2)
    empty = write_experiment(tmp_path, "empty", [])
    plot_training_curves([exp, empty], tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")
    plot_training_curves([empty], tmp_path / "none.png", column="weight_reg_loss")
    assert_png(tmp_path / "none.png")


def test_plot_embedding_map_png_and_errors(tmp_path):
    x, y = torch.randn(200, 16), torch.arange(200) % 25
    plot_embedding_map(x, y, tmp_path / "e.png", max_classes=20)
    assert_png(tmp_path / "e.png")
    one_dim = np.random.default_rng(0).normal(size=(30, 1))
    plot_embedding_map(one_dim, np.arange(30) % 3, tmp_path / "e1.png")
    assert_png(tmp_path / "e1.png")
    with pytest.raises(ValueError, match="labels"):
        plot_embedding_map(x, y[:-1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="embeddings"):
        plot_embedding_map(x[0], y[:1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="max_classes"):
        plot_embedding_map(x, y, tmp_path / "bad.png", max_classes=0)


def test_write_report(tmp_path):
    recs = fake_records()
    csv = "~iteration~,metric_loss,total_loss\n0,2.0,2.0\n5,1.0,1.0\n"
    emb = {"embeddings": torch.randn(40, 8), "labels": torch.arange(40) % 5}
    base = write_experiment(tmp_path, "base", [r for r in recs if r["experiment"] == "base"], csv_texts=[csv, csv])
    reg = write_experiment(
        tmp_path, "reg", [r for r in recs if r["experiment"] == "reg"], csv_texts=[csv], embeddings=emb
    )
    out = tmp_path / "report"
    text = write_report([base, reg], out, baseline="base")
    assert (out / "report.md").read_text() == text
    assert markdown_table(summarize(recs, baseline="base")) in text
    for name in ["metrics.png", "training_curves.png", "embeddings_reg.png"]:
        assert f"]({name})" in text
        assert_png(out / name)
    assert not (out / "embeddings_base.png").exists()
    assert "Validation MAP@R after each epoch" not in text  # no run logged validation
    assert "Run on:" not in text  # neither results.json records a device
    write_val_log(reg, 0, 0, [0.5, 0.7])
    text = write_report([base, reg], out, baseline="base")
    assert "## Validation MAP@R after each epoch" in text
    assert "| reg | 0.5000 | 0.7000 | 1 |" in text
    with pytest.raises(ValueError, match="distinct"):
        write_report([base, base], out)
