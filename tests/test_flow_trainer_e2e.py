"""The flow metric layer end to end through PML's own machinery: MetricLossOnly trainer,
GlobalEmbeddingSpaceTester and the logging_presets hooks writing through record-keeper, on generated
data; and that the regularizer lowers the mean log|det J| against the same run without it."""

import csv

import pytest
import torch
from pytorch_metric_learning import losses, trainers

from pml_regularizers import (
    DuelingFlowEmbedder,
    FlowEmbedder,
    JacobianDeterminantLoss,
    JacobianDeterminantRegularizer,
)

from .e2e import blobs, pml_logging

pytestmark = pytest.mark.slow

DIM, EMB = 16, 8


def train(tmp_path, embedder, metric_loss, epochs=1, lr=1e-2, seed=0):
    """One MetricLossOnly run with a tester and record-keeper hooks; returns the hooks and tester."""
    torch.manual_seed(seed)
    trunk = torch.nn.Sequential(torch.nn.Linear(DIM, DIM), torch.nn.ReLU())
    models = {"trunk": trunk, "embedder": embedder}
    optimizers = {
        "trunk_optimizer": torch.optim.Adam(trunk.parameters(), lr),
        "embedder_optimizer": torch.optim.Adam(embedder.parameters(), lr),
    }
    if list(metric_loss.parameters()):
        optimizers["metric_loss_optimizer"] = torch.optim.Adam(metric_loss.parameters(), lr)
    logging = pml_logging(tmp_path, blobs(5, 20, DIM, 1), patience=None, log_freq=1)
    hooks, tester = logging.hooks, logging.tester
    trainer = trainers.MetricLossOnly(
        models,
        optimizers,
        batch_size=40,
        loss_funcs={"metric_loss": metric_loss},
        dataset=blobs(10, 20, DIM, 0),
        dataloader_num_workers=0,
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        end_of_epoch_hook=logging.end_of_epoch_hook,
    )
    trainer.train(num_epochs=epochs)
    return hooks, tester, trunk


def read_csv(tmp_path, suffix):
    files = sorted((tmp_path / "logs").glob(f"*{suffix}.csv"))
    assert files, f"no log ending in {suffix} among {sorted(p.name for p in (tmp_path / 'logs').glob('*.csv'))}"
    with open(files[0]) as f:
        return list(csv.DictReader(f))


def test_regularizer_in_trainer_tester_and_record_keeper(tmp_path):
    flow = FlowEmbedder(in_features=DIM, out_features=EMB, hidden_features=32)
    reg = JacobianDeterminantRegularizer(flow, penalty="signed", collect_stats=True)
    loss = losses.TripletMarginLoss(embedding_regularizer=reg, embedding_reg_weight=0.1)
    hooks, tester, _ = train(tmp_path, flow, loss)

    rows = read_csv(tmp_path, "embedding_regularizer_JacobianDeterminantRegularizer")
    assert {"logdet_mean", "logdet_std", "logdet_min", "logdet_max"} <= set(rows[0])
    means = [float(r["logdet_mean"]) for r in rows]
    assert len(means) == 5 and means[0] == 0.0 and means[-1] < 0.0  # identity at the start
    for r in rows:
        assert float(r["logdet_min"]) <= float(r["logdet_mean"]) <= float(r["logdet_max"])
    acc = hooks.get_accuracy_history(tester, "val", return_all_metrics=True)
    assert 0.0 < acc["precision_at_1_level0"][-1] <= 1.0


def mean_logdet_after_training(tmp_path, weight):
    flow = FlowEmbedder(in_features=DIM, out_features=EMB, hidden_features=32)
    reg = JacobianDeterminantRegularizer(flow, penalty="hinge")
    loss = losses.ContrastiveLoss(embedding_regularizer=reg, embedding_reg_weight=weight)
    _, _, trunk = train(tmp_path, flow, loss, epochs=2)
    with torch.no_grad():
        _, logdet = flow.forward_and_logdet(trunk(blobs(10, 20, DIM, 0).tensors[0]))
    return logdet.mean().item()


def test_regularizer_lowers_the_mean_logdet(tmp_path):
    """Same data, seed and initialisation; only the regularizer's weight differs."""
    without = mean_logdet_after_training(tmp_path / "without", 0.0)
    with_reg = mean_logdet_after_training(tmp_path / "with", 1.0)
    assert with_reg < without - 0.1  # measured: -3.44 with, -0.07 without


def test_dueling_loss_in_trainer_and_tester(tmp_path):
    embedder = DuelingFlowEmbedder(in_features=DIM, out_features=EMB, hidden_features=32)
    loss = JacobianDeterminantLoss(
        losses.ProxyAnchorLoss(10, EMB),
        embedder,
        penalty="square",
        reward_weight=0.1,
        interpolation_eps=1.0,
        collect_stats=True,
    )
    hooks, tester, _ = train(tmp_path, embedder, loss)
    rows = read_csv(tmp_path, "metric_loss_JacobianDeterminantLoss")
    assert {"logdet_mean", "branch2_logdet_mean", "interpolated_logdet_mean", "num_interpolated"} <= set(rows[0])
    assert float(rows[-1]["branch2_logdet_mean"]) > 0.0  # rewarded from 0 upwards
    # a sample counts when its class has another sample in the batch (40 drawn from 10 x 20)
    assert all(20 < int(r["num_interpolated"]) <= 40 for r in rows)
    inner = read_csv(tmp_path, "metric_loss_JacobianDeterminantLoss__modules_loss_ProxyAnchorLoss")
    assert len(inner) == 5
    acc = hooks.get_accuracy_history(tester, "val", return_all_metrics=True)
    assert 0.0 < acc["precision_at_1_level0"][-1] <= 1.0
