"""End to end through PML's own machinery: MetricLossOnly trainer, GlobalEmbeddingSpaceTester and
the logging_presets hooks writing through record-keeper, for one short epoch on generated data."""

import csv
import sqlite3

import pytest
import torch
from pytorch_metric_learning import losses, trainers

from pml_regularizers import SkewedMeanRegularizer

from .e2e import blobs

pytestmark = pytest.mark.slow


def test_metric_loss_only_with_tester_and_record_keeper(tmp_path, pml_logging):
    train, val = blobs(10, 20, 16, 0), blobs(5, 20, 16, 1)
    trunk = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU())
    embedder = torch.nn.Linear(32, 8)
    loss = losses.ProxyAnchorLoss(
        num_classes=10,
        embedding_size=8,
        weight_regularizer=SkewedMeanRegularizer(lam=4.0, collect_stats=True),
        weight_reg_weight=0.5,
    )
    models = {"trunk": trunk, "embedder": embedder}
    optimizers = {
        "trunk_optimizer": torch.optim.Adam(trunk.parameters(), 1e-3),
        "embedder_optimizer": torch.optim.Adam(embedder.parameters(), 1e-3),
        "metric_loss_optimizer": torch.optim.Adam(loss.parameters(), 1e-2),
    }
    logging = pml_logging(val)
    hooks, tester = logging.hooks, logging.tester
    trainer = trainers.MetricLossOnly(
        models,
        optimizers,
        batch_size=40,
        loss_funcs={"metric_loss": loss},
        dataset=train,
        dataloader_num_workers=0,
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        end_of_epoch_hook=logging.end_of_epoch_hook,
    )
    trainer.train(num_epochs=1)

    # the regularizer's loss entry and its stats reach record-keeper's CSV and SQLite outputs
    csv_files = {p.name: p for p in (tmp_path / "logs").glob("*.csv")}
    reg_csv = [p for n, p in csv_files.items() if n.endswith("weight_regularizer_SkewedMeanRegularizer.csv")]
    assert reg_csv, f"no regularizer log among {sorted(csv_files)}"
    with open(reg_csv[0]) as f:
        rows = list(csv.DictReader(f))
    assert rows and {"skewed_mean", "min_distance", "mean_similarity"} <= set(rows[0])
    for r in rows:  # lam > 0: the skewed mean lies between the mean and the largest similarity
        largest = 1.0 - float(r["min_distance"]) ** 2 / 2  # unit rows: d^2 = 2 - 2 cos
        assert float(r["mean_similarity"]) - 1e-6 <= float(r["skewed_mean"]) <= largest + 1e-6
        assert float(r["mean_similarity"]) < largest
    losses_csv = [p for n, p in csv_files.items() if n.startswith("loss_histories")]
    with open(losses_csv[0]) as f:
        assert "metric_loss" in f.readline()

    db = sqlite3.connect(tmp_path / "logs" / "logs.db")
    tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert any("weight_regularizer" in t for t in tables)
    acc = hooks.get_accuracy_history(tester, "val", return_all_metrics=True)
    assert 0.0 < acc["mean_average_precision_at_r_level0"][-1] <= 1.0
