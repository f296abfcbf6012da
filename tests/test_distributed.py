"""Under PML's DistributedLossWrapper with 2 gloo processes on CPU, a loss carrying
SkewedMeanRegularizer (as weight and as embedding regularizer) gives the same loss and gradients
as one process on the concatenated batch, up to the wrapper's documented world_size factor; with
pml_regularizers.distributed_loss, the proxies start equal on every process and take the step of
one process on the global batch."""

import pytest
import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from pml_regularizers import SkewedMeanRegularizer, distributed_loss

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


@pytest.mark.slow
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


def _plain_loop_worker(rank, out_dir, use_utility, init_group=None):
    emb, labels = batch()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    torch.manual_seed(100 + rank)  # each process draws its own proxies, as a plain loop does
    loss_fn = losses.ProxyAnchorLoss(
        num_classes=CLASSES, embedding_size=DIM, weight_regularizer=SkewedMeanRegularizer(lam=4.0)
    ).double()
    wrapped = distributed_loss(loss_fn) if use_utility else DistributedLossWrapper(loss_fn)
    refused_twice = False
    if use_utility:
        try:
            distributed_loss(loss_fn)
        except ValueError as err:
            refused_twice = "given to distributed_loss before" in str(err)
    if init_group is not None:  # the loss was wrapped before the process group existed
        init_group()
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    value = wrapped(emb[rows], labels[rows])
    start = loss_fn.proxies.detach().clone()  # what the step starts from
    value.backward()
    grad = loss_fn.proxies.grad.clone()
    optimizer.step()
    torch.save(
        {"start": start, "grad": grad, "after": loss_fn.proxies.detach(), "refused_twice": refused_twice},
        f"{out_dir}/rank{rank}.pt",
    )


def _with_utility(rank, out_dir):
    _plain_loop_worker(rank, out_dir, use_utility=True)


def _without_utility(rank, out_dir):
    _plain_loop_worker(rank, out_dir, use_utility=False)


def _with_utility_before_the_group(rank, out_dir, init_group):
    _plain_loop_worker(rank, out_dir, use_utility=True, init_group=init_group)


def _matches_one_process(out_dir):
    """Whether each rank's proxies started from rank 0's and took one process's SGD step."""
    emb, labels = batch()
    outs = [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    loss_fn = losses.ProxyAnchorLoss(
        num_classes=CLASSES, embedding_size=DIM, weight_regularizer=SkewedMeanRegularizer(lam=4.0)
    ).double()
    with torch.no_grad():
        loss_fn.proxies.copy_(outs[0]["start"])
    loss_fn(emb, labels).backward()
    expected = outs[0]["start"] - 0.1 * loss_fn.proxies.grad
    return all(
        torch.allclose(out["start"], outs[0]["start"])
        and torch.allclose(out["grad"], loss_fn.proxies.grad, rtol=1e-10, atol=1e-12)
        and torch.allclose(out["after"], expected, rtol=1e-10, atol=1e-12)
        for out in outs
    )


@pytest.mark.slow
def test_distributed_loss_gives_the_proxies_one_process_step(tmp_path):
    spawn_gloo(_with_utility, tmp_path, WORLD)
    assert _matches_one_process(tmp_path)
    for rank in range(WORLD):  # a second wrap would divide the gradients twice
        assert torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)["refused_twice"]


@pytest.mark.slow
def test_distributed_loss_called_before_the_process_group_syncs_at_its_first_call(tmp_path):
    """Wrapping comes first in many scripts; the broadcast and the gradient rescaling then wait for
    the first call after init_process_group (they used to be skipped: twice the gradient on every
    rank, and rank 1's proxies never synced)."""
    spawn_gloo(_with_utility_before_the_group, tmp_path, WORLD, late_init=True)
    assert _matches_one_process(tmp_path)
    for rank in range(WORLD):
        assert torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)["refused_twice"]


@pytest.mark.slow
def test_without_the_utility_the_proxies_differ_from_one_process(tmp_path):
    """The pitfall distributed_loss fixes: PML's wrapper alone gives each rank its own proxies
    and world_size times the gradient."""
    spawn_gloo(_without_utility, tmp_path, WORLD)
    assert not _matches_one_process(tmp_path)


def test_distributed_loss_refusals_and_one_process():
    loss_fn = losses.ProxyAnchorLoss(num_classes=CLASSES, embedding_size=DIM)
    with pytest.raises(ValueError, match="efficient=True needs a loss without parameters"):
        distributed_loss(loss_fn, efficient=True)
    for bad, error, message in [
        ("proxy_anchor", TypeError, "loss must be a PML metric loss instance .* got a str: build the loss first"),
        (losses.ProxyAnchorLoss, TypeError, "got the class ProxyAnchorLoss"),
        (torch.nn.Linear(2, 2), TypeError, "got a Linear"),
        (DistributedLossWrapper(loss_fn), ValueError, "already a DistributedLossWrapper; give distributed_loss"),
    ]:
        with pytest.raises(error, match=message):
            distributed_loss(bad)
    wrapped = distributed_loss(loss_fn)  # no process group: the loss passes through, unscaled
    for again, message in [(loss_fn, "given to distributed_loss before"), (wrapped, "already a DistributedLoss")]:
        with pytest.raises(ValueError, match=message):  # a second wrap, with or without a process group
            distributed_loss(again)
    assert wrapped.loss is loss_fn
    emb, labels = batch()
    with pytest.warns(UserWarning, match="non-distributed"):
        value = wrapped(emb.float(), labels)
    torch.testing.assert_close(value, loss_fn(emb.float(), labels))
