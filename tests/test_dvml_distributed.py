"""DVML under PML's DistributedLossWrapper and DistributedMinerWrapper with 2 gloo processes on CPU:
each process holds half the batch; the metric terms on the gathered real and synthetic rows equal
one process's on the whole batch (times the wrappers' world_size factor), and so do the gradients."""

import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

from pml_regularizers import DVMLEmbedder, DVMLLoss, DVMLMiner

from ._gloo import spawn_gloo

pytestmark = pytest.mark.slow

WORLD, PER_RANK, IN, EMB, T, CLASSES = 2, 8, 10, 4, 3, 4
METRIC_TERMS = ("synthetic_metric_loss", "metric_loss")


def make_embedder():
    torch.manual_seed(11)
    return DVMLEmbedder(IN, EMB, decoder_hidden=6).double()


def make_dvml(embedder, distributed):
    loss = losses.TripletMarginLoss(margin=0.2)
    miner = miners.TripletMarginMiner(margin=0.5)
    synthetic = DVMLMiner(miners.TripletMarginMiner(margin=0.5))
    if distributed:
        loss = DistributedLossWrapper(loss)
        miner, synthetic = DistributedMinerWrapper(miner), DistributedMinerWrapper(synthetic)
    return DVMLLoss(embedder, loss, miner, synthetic, num_samples=T)


def batch():
    g = torch.Generator().manual_seed(5)
    features = torch.randn(WORLD * PER_RANK, IN, generator=g, dtype=torch.float64)
    labels = torch.arange(WORLD * PER_RANK) % CLASSES
    noise = torch.randn(WORLD * PER_RANK, T, EMB, generator=g, dtype=torch.float64)
    return features, labels, noise


def _worker(rank, out_dir):
    features, labels, noise = batch()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    mine = features[rows].clone().requires_grad_(True)
    embedder = make_embedder()
    terms = make_dvml(embedder, True).terms(mine, labels[rows], 2, noise=noise[rows])
    out = {}
    for k in METRIC_TERMS:
        feat_grad, head_grad = torch.autograd.grad(terms[k], [mine, embedder.heads.weight], retain_graph=True)
        out[k] = {"value": terms[k].detach(), "feat_grad": feat_grad, "head_grad": head_grad}
    torch.save(out, f"{out_dir}/rank{rank}.pt")


def test_same_metric_terms_and_gradients_as_one_process(tmp_path):
    spawn_gloo(_worker, tmp_path, WORLD)

    features, labels, noise = batch()
    features.requires_grad_(True)
    embedder = make_embedder()
    terms = make_dvml(embedder, False).terms(features, labels, 2, noise=noise)
    outs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for k in METRIC_TERMS:
        feat_grad, head_grad = torch.autograd.grad(terms[k], [features, embedder.heads.weight], retain_graph=True)
        assert terms[k].item() > 0, k
        head_sum = torch.zeros_like(head_grad)
        for rank, out in enumerate(outs):
            rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
            torch.testing.assert_close(out[k]["value"], WORLD * terms[k].detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(out[k]["feat_grad"], WORLD * feat_grad[rows], rtol=1e-10, atol=1e-12)
            head_sum += out[k]["head_grad"]
        # summed over ranks (what DDP's all-reduce does before averaging) the parameter gradient
        # is world_size times one process's on the whole batch
        torch.testing.assert_close(head_sum, WORLD * head_grad, rtol=1e-10, atol=1e-12)
