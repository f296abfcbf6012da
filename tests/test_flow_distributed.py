"""Under PML's DistributedLossWrapper with 2 gloo processes on CPU: a loss carrying
JacobianDeterminantRegularizer, and JacobianDeterminantLoss with a dueling pair and interpolated
points, give the same loss and gradients as one process on the concatenated batch, up to the
wrapper's documented world_size factor (gradients of the flow's parameters: their mean over ranks,
which is what DDP applies, equals the single-process gradient)."""

import pytest
import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper

from pml_regularizers import (
    DuelingFlowEmbedder,
    FlowEmbedder,
    JacobianDeterminantLoss,
    JacobianDeterminantRegularizer,
)
from pml_regularizers import functional as F

from ._gloo import spawn_gloo

pytestmark = pytest.mark.slow

WORLD, PER_RANK, IN, EMB = 2, 6, 7, 4
EPS, LAM1, LAM2 = 0.9, 0.5, 0.25


def randomised(module):
    torch.manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return module.double()


def make_flow():
    return randomised(FlowEmbedder(IN, EMB, hidden_features=8))


def make_dueling():
    return randomised(DuelingFlowEmbedder(IN, EMB, hidden_features=8))


def regularized_loss(flow):
    reg = JacobianDeterminantRegularizer(flow, penalty="square", target=0.1)
    return losses.ContrastiveLoss(embedding_regularizer=reg, embedding_reg_weight=0.7)


def dueling_loss(emb):
    return JacobianDeterminantLoss(
        losses.ContrastiveLoss(),
        emb,
        penalty_weight=LAM1,
        reward_weight=LAM2,
        penalty="square",
        interpolation_eps=EPS,
    )


def batch():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(WORLD * PER_RANK, IN, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 0, 1, 1, 2, 3, 3])
    return h, labels


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def _worker(rank, out_dir):
    h, labels = batch()
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    out = {}

    flow = make_flow()
    mine = h[rows].clone().requires_grad_(True)
    loss = DistributedLossWrapper(regularized_loss(flow))(flow(mine), labels[rows])
    loss.backward()
    out["reg"] = {"loss": loss.detach(), "h_grad": mine.grad, "flow_grads": grads(flow)}

    emb = make_dueling()
    mine = h[rows].clone().requires_grad_(True)
    z = emb(mine)
    torch.manual_seed(100 + rank)  # this rank's interpolated points
    loss = DistributedLossWrapper(dueling_loss(emb))(z, labels[rows])
    loss.backward()
    out["dueling"] = {"loss": loss.detach(), "h_grad": mine.grad, "flow_grads": grads(emb)}
    torch.save(out, f"{out_dir}/rank{rank}.pt")


def dueling_reference(h, labels):
    """The method on the whole batch by hand, with each rank's interpolated points."""
    emb = make_dueling()
    z, ld1 = emb.branch1.forward_and_logdet(h)
    _, ld2 = emb.branch2.forward_and_logdet(h)
    extra1, extra2 = [], []
    for rank in range(WORLD):
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        torch.manual_seed(100 + rank)
        points, valid = F.same_class_interpolation(h[rows], labels[rows], EPS)
        extra1.append(emb.branch1.forward_and_logdet(points)[1][valid])
        extra2.append(emb.branch2.forward_and_logdet(points)[1][valid])
    r1 = torch.cat([ld1, *extra1]) ** 2
    r2 = -torch.cat([ld2, *extra2])
    return emb, losses.ContrastiveLoss()(z, labels) + LAM1 * r1.mean() + LAM2 * r2.mean()


def test_same_loss_and_gradients_as_one_process(tmp_path):
    spawn_gloo(_worker, tmp_path, WORLD)
    outs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    h, labels = batch()
    h.requires_grad_(True)
    flow = make_flow()
    single = regularized_loss(flow)(flow(h), labels)
    single.backward()
    check(outs, "reg", single, h.grad, grads(flow))

    h.grad = None
    emb, single = dueling_reference(h, labels)
    single.backward()
    check(outs, "dueling", single, h.grad, grads(emb))


def check(outs, key, single, h_grad, flow_grads):
    for rank, out in enumerate(outs):
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        # the wrapper multiplies by world_size so that DDP's gradient averaging gives the sum
        torch.testing.assert_close(out[key]["loss"], WORLD * single.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[key]["h_grad"], WORLD * h_grad[rows], rtol=1e-10, atol=1e-12)
    for name, g in flow_grads.items():
        mean = sum(out[key]["flow_grads"][name] for out in outs) / WORLD
        torch.testing.assert_close(mean, g, rtol=1e-10, atol=1e-12)
    assert any(g.abs().sum() > 0 for g in flow_grads.values())
