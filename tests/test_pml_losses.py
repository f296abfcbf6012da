"""SkewedMeanRegularizer inside every PML loss that takes a weight regularizer, and as an
embedding regularizer: the regularizer changes the loss (and its gradient) by exactly
weight_reg_weight times its own value (gradient), in every dtype."""

import pytest
import torch
from pytorch_metric_learning import losses

from pml_regularizers import SkewedMeanRegularizer

from .conftest import TEST_DTYPES, rtol_for

NUM_CLASSES, DIM, K = 6, 8, 3

# (loss class, extra kwargs, name of the weight parameter, whether PML passes it transposed,
#  centers per class of its rows)
WEIGHT_LOSSES = [
    (losses.ArcFaceLoss, {}, "W", True, 1),
    (losses.CosFaceLoss, {}, "W", True, 1),
    (losses.SphereFaceLoss, {}, "W", True, 1),
    (losses.LargeMarginSoftmaxLoss, {}, "W", True, 1),
    (losses.SubCenterArcFaceLoss, {"sub_centers": K}, "W", True, K),
    (losses.NormalizedSoftmaxLoss, {}, "W", True, 1),
    (losses.SoftTripleLoss, {"centers_per_class": K}, "fc", True, K),
    (losses.ProxyAnchorLoss, {}, "proxies", False, 1),
    (losses.ProxyNCALoss, {}, "proxies", False, 1),
]


def make_pair(loss_cls, kwargs, reg_weight, k):
    torch.manual_seed(123)
    plain = loss_cls(num_classes=NUM_CLASSES, embedding_size=DIM, **kwargs)
    torch.manual_seed(123)
    reg = SkewedMeanRegularizer(lam=4.0, num_classes=NUM_CLASSES, centers_per_class=k)
    with_reg = loss_cls(
        num_classes=NUM_CLASSES,
        embedding_size=DIM,
        weight_regularizer=reg,
        weight_reg_weight=reg_weight,
        **kwargs,
    )
    return plain, with_reg


@pytest.mark.parametrize("dtype", TEST_DTYPES)
@pytest.mark.parametrize("loss_cls, kwargs, attr, transposed, k", WEIGHT_LOSSES)
def test_weight_regularizer_adds_exactly_its_weighted_value(dtype, loss_cls, kwargs, attr, transposed, k):
    reg_weight = 0.7
    plain, with_reg = make_pair(loss_cls, kwargs, reg_weight, k)
    emb = torch.randn(16, DIM).to(dtype)
    labels = torch.randint(0, NUM_CLASSES, (16,))
    base = plain(emb, labels)
    total = with_reg(emb, labels)
    assert total.dtype == base.dtype

    w = getattr(with_reg, attr)
    rows = (w.t() if transposed else w).detach().to(dtype).requires_grad_(True)
    reg_value = SkewedMeanRegularizer(lam=4.0, centers_per_class=k)(rows)
    # in float16 the difference of two losses carries the rounding of the losses themselves
    atol = rtol_for(dtype) * abs(base.item()) if dtype == torch.float16 else 1e-6
    torch.testing.assert_close(
        (total - base).double(), reg_weight * reg_value.double(), rtol=rtol_for(dtype), atol=atol
    )

    base.backward()
    total.backward()
    (reg_grad,) = torch.autograd.grad(reg_value, rows)
    if transposed:
        reg_grad = reg_grad.t()
    grad_diff = getattr(with_reg, attr).grad - getattr(plain, attr).grad
    assert torch.isfinite(getattr(with_reg, attr).grad).all()
    if dtype != torch.float16:  # the base loss's own float16 gradient noise swamps the difference
        torch.testing.assert_close(grad_diff.double(), reg_weight * reg_grad.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", TEST_DTYPES)
@pytest.mark.parametrize("loss", [losses.ContrastiveLoss, losses.TripletMarginLoss, losses.MultiSimilarityLoss])
def test_embedding_regularizer_batch_uniformity(dtype, loss):
    reg_weight = 0.3
    plain = loss()
    with_reg = loss(embedding_regularizer=SkewedMeanRegularizer(lam=2.0), embedding_reg_weight=reg_weight)
    emb = torch.randn(20, DIM).to(dtype).requires_grad_(True)
    labels = torch.randint(0, 4, (20,))
    diff = with_reg(emb, labels) - plain(emb, labels)
    expected = reg_weight * SkewedMeanRegularizer(lam=2.0)(emb)
    torch.testing.assert_close(
        diff.double(), expected.double(), rtol=rtol_for(dtype), atol=2e-3 if dtype == torch.float16 else 1e-6
    )
    (g,) = torch.autograd.grad(with_reg(emb, labels), emb)
    assert torch.isfinite(g).all()


def test_regularizer_is_a_submodule_of_the_loss_with_no_parameters():
    loss = losses.ProxyAnchorLoss(NUM_CLASSES, DIM, weight_regularizer=SkewedMeanRegularizer())
    assert isinstance(loss.weight_regularizer, SkewedMeanRegularizer)
    assert [n for n, _ in loss.named_parameters()] == ["proxies"]
