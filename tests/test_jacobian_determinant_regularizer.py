"""JacobianDeterminantRegularizer: its value against brute-force Jacobian log-determinants, float64
gradcheck (inputs and flow parameters), dtypes through PML losses, the PML losses it works with,
that it does not own the flow, its stats and its error messages."""

import math

import pytest
import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.reducers import SumReducer

from pml_regularizers import (
    DuelingFlowEmbedder,
    FlowEmbedder,
    JacobianDeterminantLoss,
    JacobianDeterminantRegularizer,
)

from .conftest import TEST_DTYPES, rtol_for


def random_flow(in_features=10, out_features=6, std=0.3, **kwargs):
    flow = FlowEmbedder(in_features, out_features, hidden_features=12, **kwargs)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, std)
    return flow


def brute_force_logdets(flow, x):
    h = x if flow.projection is None else flow.projection(x)
    jac = torch.func.vmap(torch.func.jacrev(flow.transform()))(h)
    return torch.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("penalty", ["signed", "square", "hinge"])
@pytest.mark.parametrize("target", [0.0, "median"])
@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_value_equals_brute_force(penalty, target, coupling):
    flow = random_flow(coupling=coupling).double()
    x = torch.randn(9, 10, dtype=torch.float64)
    logdets = brute_force_logdets(flow, x)
    if target == "median":  # half the samples on each side of the hinge's kink (affine)
        target = logdets.median().item() + 1e-3
    reg = JacobianDeterminantRegularizer(flow, penalty=penalty, target=target)
    value = reg(flow(x))
    r = logdets - target
    expected = {"signed": r, "square": r**2, "hinge": r.clamp_min(0)}[penalty].mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)
    if coupling == "affine":
        assert expected.abs().item() > 1e-4


def _square_penalty_reference(flow, x):
    return brute_force_logdets(flow, x).square().mean()


def test_logdets_follow_the_embeddings_not_the_latest_forward_of_the_same_size():
    flow = random_flow().double()
    x, ref, view, val = (torch.randn(6, 10, dtype=torch.float64) for _ in range(4))
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 0, 1, 2])
    reg = JacobianDeterminantRegularizer(flow, penalty="square")
    loss_fn = losses.ContrastiveLoss(embedding_regularizer=reg, embedding_reg_weight=1.0)
    inner = losses.ContrastiveLoss()
    leaf = x.clone().requires_grad_(True)
    z = flow(leaf)
    z_ref = flow(ref)  # PML's ref_emb batch, also through the flow, after the embeddings
    with torch.no_grad():
        flow(val)  # a validation batch in between
    flow(view)  # a second view, never given to the loss
    value = loss_fn(z, labels, None, z_ref, ref_labels)
    expected = inner(z, labels, None, z_ref, ref_labels) + _square_penalty_reference(flow, x)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    (grad,) = torch.autograd.grad(value, leaf)
    leaf_ref = x.clone().requires_grad_(True)
    z2 = flow.forward_and_logdet(leaf_ref)[0]
    expected = inner(z2, labels, None, z_ref.detach(), ref_labels) + _square_penalty_reference(flow, leaf_ref)
    (grad_expected,) = torch.autograd.grad(expected, leaf_ref)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-9, atol=1e-12)


def test_a_copy_of_the_embeddings_is_matched_by_value():
    # DistributedDataParallel(find_unused_parameters=True) hands back copies of the module's output
    flow = random_flow().double()
    reg = JacobianDeterminantRegularizer(flow, penalty="square")
    x = torch.randn(5, 10, dtype=torch.float64)
    copy = flow(x).clone()  # the module's output itself is gone: the latest forward is matched
    assert reg(copy).item() == pytest.approx(_square_penalty_reference(flow, x).item(), rel=1e-10)
    z = flow(x)
    copy = z.clone()
    flow(torch.randn(5, 10, dtype=torch.float64))  # not the latest any more, but z is alive
    assert reg(copy).item() == pytest.approx(_square_penalty_reference(flow, x).item(), rel=1e-10)


@pytest.mark.parametrize("projection", [True, False])
def test_empty_and_one_row_batches(projection):
    flow = random_flow(10 if projection else 6, 6).double()
    reg = JacobianDeterminantRegularizer(flow, penalty="square")
    empty = flow(torch.zeros(0, flow.in_features, dtype=torch.float64))
    assert empty.shape == (0, 6) and flow.logdet_of(empty).shape == (0,)
    labels = torch.zeros(0, dtype=torch.long)
    assert losses.ContrastiveLoss(embedding_regularizer=reg)(empty, labels).item() == 0.0
    assert JacobianDeterminantLoss(losses.ContrastiveLoss(), flow)(empty, labels).item() == 0.0
    x = torch.randn(1, flow.in_features, dtype=torch.float64)
    assert reg(flow(x)).item() == pytest.approx(brute_force_logdets(flow, x).square().item(), rel=1e-10)


def test_reducer_gets_one_value_per_embedding():
    flow = random_flow().double()
    z = flow(torch.randn(7, 10, dtype=torch.float64))
    mean = JacobianDeterminantRegularizer(flow, penalty="square")(z)
    total = JacobianDeterminantRegularizer(flow, penalty="square", reducer=SumReducer())(z)
    assert total.item() == pytest.approx(7 * mean.item(), rel=1e-12)


@pytest.mark.parametrize("penalty", ["signed", "square", "hinge"])
@pytest.mark.slow
def test_gradcheck_float64_inputs_and_flow_parameters(penalty):
    flow = random_flow(6, 4, std=0.4).double()
    reg = JacobianDeterminantRegularizer(flow, penalty=penalty, target=-0.05)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: reg(flow(v)), (x,))

    params = dict(flow.named_parameters())
    name = "blocks.1.hyper.0.weight"

    def of_weight(w):
        out = torch.func.functional_call(flow, {**params, name: w}, (x.detach(),))
        return reg(out)

    w = params[name].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(of_weight, (w,))


def pml_loss_output(loss_fn, flow, x, labels):
    z = flow(x)
    return loss_fn(z, labels), z


@pytest.mark.parametrize("dtype", TEST_DTYPES)
@pytest.mark.parametrize("flow_dtype", ["float32", "same"])
@pytest.mark.parametrize("loss_name", ["contrastive", "proxy_anchor"])
def test_dtypes_through_a_pml_loss(dtype, flow_dtype, loss_name):
    flow32 = random_flow(std=0.15)
    x64 = torch.randn(12, 10, dtype=torch.float64)
    labels = torch.arange(4).repeat(3)

    def make(flow):
        torch.manual_seed(3)
        reg = JacobianDeterminantRegularizer(flow, penalty="square")
        if loss_name == "contrastive":
            return losses.ContrastiveLoss(embedding_regularizer=reg, embedding_reg_weight=0.5)
        return losses.ProxyAnchorLoss(4, 6, embedding_regularizer=reg, embedding_reg_weight=0.5)

    ref_flow = random_flow(std=0.15).double()
    ref_flow.load_state_dict(flow32.state_dict())
    expected = make(ref_flow).double()(ref_flow(x64), labels)

    flow = flow32.to(dtype) if flow_dtype == "same" else flow32
    loss_fn = make(flow).to(dtype)
    x = x64.to(dtype).requires_grad_(True)
    value = loss_fn(flow(x), labels)
    assert value.dtype == dtype
    torch.testing.assert_close(value.double(), expected, rtol=rtol_for(dtype), atol=rtol_for(dtype))
    value.backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in flow.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def _with_reg(factory):
    return lambda reg, w: factory(embedding_regularizer=reg, embedding_reg_weight=w)


# the PML losses listed in docs/methods/jacobian_determinant.md: (name, factory(reg, weight))
PML_LOSSES = {
    "ContrastiveLoss": _with_reg(losses.ContrastiveLoss),
    "TripletMarginLoss": _with_reg(losses.TripletMarginLoss),
    "MultiSimilarityLoss": _with_reg(losses.MultiSimilarityLoss),
    "CircleLoss": _with_reg(losses.CircleLoss),
    "NTXentLoss": _with_reg(losses.NTXentLoss),
    "SupConLoss": _with_reg(losses.SupConLoss),
    "MarginLoss": _with_reg(losses.MarginLoss),
    "LiftedStructureLoss": _with_reg(losses.LiftedStructureLoss),
    "NCALoss": _with_reg(losses.NCALoss),
    "ProxyAnchorLoss": _with_reg(lambda **k: losses.ProxyAnchorLoss(4, 6, **k)),
    "ProxyNCALoss": _with_reg(lambda **k: losses.ProxyNCALoss(4, 6, **k)),
    "NormalizedSoftmaxLoss": _with_reg(lambda **k: losses.NormalizedSoftmaxLoss(4, 6, **k)),
    "ArcFaceLoss": _with_reg(lambda **k: losses.ArcFaceLoss(4, 6, **k)),
    "CosFaceLoss": _with_reg(lambda **k: losses.CosFaceLoss(4, 6, **k)),
    "SoftTripleLoss": _with_reg(lambda **k: losses.SoftTripleLoss(4, 6, **k)),
    "SubCenterArcFaceLoss": _with_reg(lambda **k: losses.SubCenterArcFaceLoss(num_classes=4, embedding_size=6, **k)),
    "MultipleLosses": lambda reg, w: losses.MultipleLosses(
        [losses.ContrastiveLoss(embedding_regularizer=reg, embedding_reg_weight=w), losses.TripletMarginLoss()]
    ),
    "CrossBatchMemory": lambda reg, w: losses.CrossBatchMemory(
        losses.ContrastiveLoss(embedding_regularizer=reg, embedding_reg_weight=w), 6, memory_size=32
    ),
}


@pytest.mark.parametrize("name", list(PML_LOSSES))
def test_pml_losses_add_exactly_the_weighted_regularizer(name):
    flow = random_flow().double()
    x = torch.randn(12, 10, dtype=torch.float64)
    labels = torch.arange(4).repeat(3)
    weight = 0.3
    reg = JacobianDeterminantRegularizer(flow, penalty="signed")
    torch.manual_seed(5)
    with_reg = PML_LOSSES[name](reg, weight).double()
    torch.manual_seed(5)
    without = PML_LOSSES[name](None, 1).double()
    z = flow(x)
    diff = with_reg(z, labels) - without(z, labels)
    expected = weight * brute_force_logdets(flow, x).mean()
    assert diff.item() == pytest.approx(expected.item(), rel=1e-8, abs=1e-10)
    assert abs(expected.item()) > 1e-3


def test_self_supervised_loss_is_refused_with_a_clear_message():
    """SelfSupervisedLoss concatenates two views: the regularizer sees 2N rows for N log-dets."""
    flow = random_flow()
    reg = JacobianDeterminantRegularizer(flow)
    loss_fn = losses.SelfSupervisedLoss(losses.NTXentLoss(embedding_regularizer=reg))
    a, b = flow(torch.randn(6, 10)), flow(torch.randn(6, 10))
    with pytest.raises(ValueError, match=r"embeddings \(\(12, 6\)\) were not returned by FlowEmbedder"):
        loss_fn(a, b)


def test_the_flow_is_not_a_submodule():
    flow = random_flow()
    loss_fn = losses.ProxyAnchorLoss(
        4, 6, embedding_regularizer=JacobianDeterminantRegularizer(flow, collect_stats=True)
    )
    flow_params = {id(p) for p in flow.parameters()}
    assert len(flow_params) > 0
    assert not flow_params & {id(p) for p in loss_fn.parameters()}
    assert list(loss_fn.state_dict()) == ["proxies"]
    assert all(m is not flow for m in loss_fn.modules())
    optimizer = torch.optim.SGD([*flow.parameters(), *loss_fn.parameters()], lr=0.1)  # no duplicate
    assert len(optimizer.param_groups[0]["params"]) == len(flow_params) + 1
    loss_fn.double()
    assert next(flow.parameters()).dtype == torch.float32
    assert loss_fn.embedding_regularizer.embedder is flow


def test_dueling_embedder_regularizes_branch_one():
    dueling = DuelingFlowEmbedder(10, 6, hidden_features=12)
    with torch.no_grad():
        for p in dueling.parameters():
            p.normal_(0.0, 0.3)
    dueling.double()
    reg = JacobianDeterminantRegularizer(dueling, penalty="signed")
    x = torch.randn(5, 10, dtype=torch.float64)
    z = dueling(x)
    expected = brute_force_logdets(dueling.branch1, x).mean().item()
    other = brute_force_logdets(dueling.branch2, x).mean().item()
    assert abs(expected - other) > 1e-3  # the branches differ, so the check tells them apart
    assert reg(z).item() == pytest.approx(expected, rel=1e-9)


def test_stats_are_recorded():
    flow = random_flow().double()
    reg = JacobianDeterminantRegularizer(flow, collect_stats=True)
    assert {"logdet_mean", "logdet_std", "logdet_min", "logdet_max"} <= set(reg._record_these_stats)
    x = torch.randn(8, 10, dtype=torch.float64)
    reg(flow(x))
    ld = brute_force_logdets(flow, x)
    assert reg.logdet_mean == pytest.approx(ld.mean().item(), rel=1e-10)
    assert reg.logdet_std == pytest.approx(ld.std(correction=0).item(), rel=1e-8)
    assert reg.logdet_min == pytest.approx(ld.min().item(), rel=1e-10)
    assert reg.logdet_max == pytest.approx(ld.max().item(), rel=1e-10)


def test_stats_off_by_default():
    flow = random_flow()
    reg = JacobianDeterminantRegularizer(flow)
    reg(flow(torch.randn(3, 10)))
    assert not hasattr(reg, "logdet_mean")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"embedder": torch.nn.Linear(3, 3)}, "embedder must be a FlowEmbedder or DuelingFlowEmbedder, got Linear"),
        ({"penalty": "abs"}, "penalty must be one of"),
        ({"target": math.nan}, "target must be a finite"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"embedder": random_flow(), **kwargs}
    with pytest.raises(ValueError, match=match):
        JacobianDeterminantRegularizer(**args)


def test_called_before_the_flow_ran():
    flow = random_flow()
    with pytest.raises(RuntimeError, match="FlowEmbedder has not run yet"):
        JacobianDeterminantRegularizer(flow)(torch.randn(4, 6))


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (torch.randn(5, 6), ValueError, r"embeddings \(\(5, 6\)\) were not returned by FlowEmbedder's forward"),
        (torch.randn(4, 6), ValueError, "were not returned by FlowEmbedder's forward"),
        (torch.randn(4, 7), ValueError, r"x must be 2-D with shape \(N, out_features=6\), got shape \(4, 7\)"),
        (torch.randn(4), ValueError, r"got shape \(4,\)"),
        (torch.full((4, 6), math.nan), ValueError, "x contains non-finite"),
        (torch.ones(4, 6, dtype=torch.long), ValueError, "floating-point dtype"),
    ],
)
def test_bad_input(x, exc, match):
    flow = random_flow()
    flow(torch.randn(4, 10))
    with pytest.raises(exc, match=match):
        JacobianDeterminantRegularizer(flow)(x)


def test_flow_is_the_former_name_of_embedder():
    flow = random_flow()
    with pytest.warns(FutureWarning, match=r"is now JacobianDeterminantRegularizer\(embedder=...\)"):
        reg = JacobianDeterminantRegularizer(flow=flow)
    assert reg.embedder is flow
    with pytest.raises(ValueError, match="give the flow as embedder only"):
        JacobianDeterminantRegularizer(flow, flow=flow)
