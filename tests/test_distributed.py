"""Under PML's DistributedLossWrapper with 2 gloo processes on CPU, a loss carrying
SkewedMeanRegularizer (as weight and as embedding regularizer) gives the same loss and gradients
as one process on the concatenated batch, up to the wrapper's documented world_size factor."""

import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from pml_regularizers import SkewedMeanRegularizer

from ._gloo import spawn_gloo

WORLD, PER_RANK, DIM, CLASSES = 2, 8, 6, 5


def make_loss():
    torch.manual_seed(7)
    return losses.ProxyAnchorLoss(
        num_classes=CLASSES,
        embedding_size=DIM,
        weight_regularizer=SkewedMeanRegularizer(lam=4.0),
        weight_reg_weight=0.5,
        embedding_regularizer=SkewedMeanRegularizer(lam=2.0),
        embedding_reg_weight=0.25,
    ).double()


def batch():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(WORLD * PER_RANK, DIM, generator=g, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (WORLD * PER_RANK,), generator=g)
    return emb, labels


def _worker(rank, out_dir):
    emb, labels = batch()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    mine = emb[rows].clone().requires_grad_(True)
    loss_fn = make_loss()
    loss = DistributedLossWrapper(loss_fn)(mine, labels[rows])
    loss.backward()
    torch.save(
        {"loss": loss.detach(), "emb_grad": mine.grad, "proxy_grad": loss_fn.proxies.grad},
        f"{out_dir}/rank{rank}.pt",
    )


def test_same_loss_and_gradients_as_one_process(tmp_path):
    spawn_gloo(_worker, tmp_path, WORLD)

    emb, labels = batch()
    emb.requires_grad_(True)
    loss_fn = make_loss()
    single = loss_fn(emb, labels)
    single.backward()

    for rank in range(WORLD):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        # the wrapper multiplies by world_size so that DDP's gradient averaging gives the sum
        torch.testing.assert_close(out["loss"], WORLD * single.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out["emb_grad"], WORLD * emb.grad[rows], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(out["proxy_grad"], WORLD * loss_fn.proxies.grad, rtol=1e-10, atol=1e-12)
