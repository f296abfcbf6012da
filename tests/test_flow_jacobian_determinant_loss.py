"""JacobianDeterminantLoss (the dueling pair and the interpolated points) and the functional helpers
behind it, against brute-force Jacobian log-determinants, float64 gradcheck, a plain training loop,
and its error messages."""

import math
from collections import Counter

import pytest
import torch
from pytorch_metric_learning import losses

from pml_regularizers import (
    DuelingFlowEmbedder,
    FlowEmbedder,
    JacobianDeterminantLoss,
    JacobianDeterminantRegularizer,
)
from pml_regularizers import functional as F


def randomise(module, std=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def brute_force_logdets(flow, x):
    h = x if flow.projection is None else flow.projection(x)
    jac = torch.func.vmap(torch.func.jacrev(flow.transform()))(h)
    return torch.linalg.slogdet(jac)[1]


# functional ---------------------------------------------------------------------------------------


def test_logdet_penalty_closed_forms():
    ld = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(F.logdet_penalty(ld, "signed", 0.5), ld - 0.5)
    torch.testing.assert_close(F.logdet_penalty(ld, "square", 0.5), (ld - 0.5) ** 2)
    torch.testing.assert_close(F.logdet_penalty(ld, "hinge", 0.5), torch.tensor([0, 0, 0, 0, 2.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="penalty must be one of"):
        F.logdet_penalty(ld, "abs")


def test_interpolated_points_lie_between_same_class_samples():
    h = torch.randn(12, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 1, 4])
    eps = 0.6
    points, valid = F.same_class_interpolation(h, labels, eps)
    assert valid.tolist() == [c != 2 and c != 4 for c in labels.tolist()]
    for i in range(12):
        if not valid[i]:
            assert torch.equal(points[i], h[i])
            continue
        # points[i] = h_i + eps * u * (h_j - h_i) for exactly one j != i of the same class
        found = []
        for j in range(12):
            if j == i:
                continue
            d = h[j] - h[i]
            t = torch.dot(points[i] - h[i], d) / torch.dot(d, d)
            if torch.allclose(h[i] + t * d, points[i], atol=1e-12) and 0 <= t <= eps:
                found.append(j)
        assert len(found) == 1 and labels[found[0]] == labels[i]


@pytest.mark.slow
def test_interpolation_partners_are_uniform_within_the_class():
    h = torch.eye(6, dtype=torch.float64)  # partner j is read off as the nonzero coordinate
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    counts = Counter()
    draws = 3000
    for _ in range(draws):
        points, _ = F.same_class_interpolation(h, labels, 1.0)
        counts[int(points[0, 1:4].argmax()) + 1] += 1
    for j in (1, 2, 3):  # each of sample 0's three classmates about a third of the time
        assert abs(counts[j] / draws - 1 / 3) < 0.04


def test_interpolation_is_differentiable_and_checks_shapes():
    h = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    points, _ = F.same_class_interpolation(h, labels, 1.0)
    # point 0 = h_0 + w (h_1 - h_0), with its only partner h_1 and w = eps * u in (0, 1)
    (grad,) = torch.autograd.grad(points[0].sum(), h)
    w = ((points[0] - h[0]) / (h[1] - h[0])).detach()
    torch.testing.assert_close(w, w[0].expand(3))  # one step for all coordinates
    assert 0 < w[0] < 1
    torch.testing.assert_close(grad[1], w)
    torch.testing.assert_close(grad[0], 1 - w)
    assert torch.equal(grad[2:], torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        F.same_class_interpolation(h, labels[:3], 1.0)
    with pytest.raises(ValueError, match="h must be 2-D"):
        F.same_class_interpolation(h[0], labels, 1.0)
    for eps in (0.0, -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            F.same_class_interpolation(h, labels, eps)


# the loss -----------------------------------------------------------------------------------------


def make_dueling(in_features=8, out_features=5):
    return randomise(DuelingFlowEmbedder(in_features, out_features, hidden_features=10)).double()


@pytest.mark.parametrize("interpolation_eps", [None, 0.8])
@pytest.mark.parametrize("penalty, reward", [("signed", "signed"), ("square", "hinge"), ("hinge", "signed")])
def test_value_equals_brute_force(interpolation_eps, penalty, reward):
    emb = make_dueling()
    x = torch.randn(10, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 4])
    inner = losses.ContrastiveLoss()
    lam1, lam2, tau1, tau2 = 0.7, 0.3, 0.2, 1.5
    loss_fn = JacobianDeterminantLoss(
        inner,
        emb,
        penalty_weight=lam1,
        reward_weight=lam2,
        penalty=penalty,
        target=tau1,
        reward=reward,
        reward_target=tau2,
        interpolation_eps=interpolation_eps,
    )
    torch.manual_seed(11)
    value = loss_fn(emb(x), labels)

    def points_logdets(flow):
        ld = brute_force_logdets(flow, x)
        if interpolation_eps is None:
            return ld
        torch.manual_seed(11)
        pts, valid = F.same_class_interpolation(x, labels, interpolation_eps)
        assert valid.sum() == 8
        return torch.cat([ld, brute_force_logdets(flow, pts)[valid]])

    r1 = points_logdets(emb.branch1) - tau1
    rho1 = {"signed": r1, "square": r1**2, "hinge": r1.clamp_min(0)}[penalty]
    r2 = tau2 - points_logdets(emb.branch2)
    rho2 = r2.clamp_min(0) if reward == "hinge" else r2
    expected = inner(emb.branch1.forward_and_logdet(x)[0], labels) + lam1 * rho1.mean() + lam2 * rho2.mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)


def test_reference_embeddings_reach_the_inner_loss_and_zero_penalty_weight_drops_the_penalty():
    emb = make_dueling()
    x, ref = torch.randn(6, 8, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 2])
    inner = losses.ContrastiveLoss()
    loss_fn = JacobianDeterminantLoss(
        inner, emb, penalty_weight=0.0, reward_weight=0.4, reward="signed", reward_target=1.0
    )
    z = emb(x)
    value = loss_fn(z, labels, None, ref, ref_labels)
    reward = 0.4 * (1.0 - brute_force_logdets(emb.branch2, x)).mean()
    expected = inner(z, labels, None, ref, ref_labels) + reward
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    assert inner(z, labels).item() != pytest.approx(inner(z, labels, None, ref, ref_labels).item())


def test_the_terms_follow_the_embeddings_when_the_reference_batch_also_went_through_the_flow():
    emb = make_dueling()
    x, ref = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 0, 1, 2])
    inner = losses.ContrastiveLoss()
    loss_fn = JacobianDeterminantLoss(
        inner, emb, penalty_weight=0.7, reward_weight=0.4, penalty="square", interpolation_eps=0.5
    )
    z = emb(x)
    z_ref = emb(ref)  # same size, after the embeddings: its records must not be read
    torch.manual_seed(5)
    value = loss_fn(z, labels, None, z_ref, ref_labels)
    torch.manual_seed(5)
    pts, valid = F.same_class_interpolation(x, labels, 0.5)
    ld1 = torch.cat([brute_force_logdets(emb.branch1, x), brute_force_logdets(emb.branch1, pts)[valid]])
    ld2 = torch.cat([brute_force_logdets(emb.branch2, x), brute_force_logdets(emb.branch2, pts)[valid]])
    expected = inner(z, labels, None, z_ref, ref_labels) + 0.7 * ld1.square().mean() - 0.4 * ld2.mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.slow
def test_gradcheck_float64_with_dueling_and_interpolation():
    emb = make_dueling(5, 4)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    loss_fn = JacobianDeterminantLoss(
        losses.ContrastiveLoss(), emb, penalty="square", reward_weight=0.4, interpolation_eps=1.0
    )

    def f(x):
        torch.manual_seed(0)  # the same interpolated points on every evaluation
        return loss_fn(emb(x), labels)

    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x,))


def test_only_the_inner_loss_parameters_belong_to_it():
    emb = DuelingFlowEmbedder(8, 5, hidden_features=10)
    loss_fn = JacobianDeterminantLoss(losses.ProxyAnchorLoss(3, 5), emb, reward_weight=1.0)
    assert list(loss_fn.state_dict()) == ["loss.proxies"]
    assert [n for n, _ in loss_fn.named_parameters()] == ["loss.proxies"]
    assert loss_fn.embedder is emb


@pytest.mark.slow
def test_plain_loop_penalty_lowers_branch1_and_reward_raises_branch2():
    torch.manual_seed(0)
    centers = 3 * torch.randn(4, 8)
    labels = torch.arange(4).repeat_interleave(8)
    x = centers[labels] + torch.randn(32, 8)
    emb = DuelingFlowEmbedder(8, 6, hidden_features=16)
    loss_fn = JacobianDeterminantLoss(
        losses.ProxyAnchorLoss(4, 6), emb, penalty="signed", reward_weight=1.0, interpolation_eps=1.0
    )
    opt = torch.optim.Adam([*emb.parameters(), *loss_fn.parameters()], lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        loss_fn(emb(x), labels).backward()
        opt.step()
    with torch.no_grad():
        ld1 = emb.branch1.forward_and_logdet(x)[1].mean().item()
        ld2 = emb.branch2.forward_and_logdet(x)[1].mean().item()
    assert ld1 < -0.5 and ld2 > 0.5  # both start at 0 (identity)


def test_stats():
    emb = make_dueling()
    loss_fn = JacobianDeterminantLoss(
        losses.ContrastiveLoss(), emb, reward_weight=1.0, interpolation_eps=1.0, collect_stats=True
    )
    x = torch.randn(6, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    torch.manual_seed(2)
    loss_fn(emb(x), labels)
    assert loss_fn.num_interpolated == 4
    assert loss_fn.logdet_mean == pytest.approx(brute_force_logdets(emb.branch1, x).mean().item(), rel=1e-10)
    assert loss_fn.branch2_logdet_mean == pytest.approx(brute_force_logdets(emb.branch2, x).mean().item(), rel=1e-10)
    torch.manual_seed(2)
    pts, valid = F.same_class_interpolation(x, labels, 1.0)
    expected = brute_force_logdets(emb.branch1, pts)[valid].mean().item()
    assert loss_fn.interpolated_logdet_mean == pytest.approx(expected, rel=1e-10)


def test_also_takes_a_single_flow_and_an_embedding_regularizer():
    flow = randomise(FlowEmbedder(8, 5, hidden_features=10)).double()
    x = torch.randn(6, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = JacobianDeterminantLoss(
        losses.ContrastiveLoss(),
        flow,
        penalty="signed",
        embedding_regularizer=JacobianDeterminantRegularizer(flow, penalty="signed"),
        embedding_reg_weight=2.0,
    )
    z = flow(x)
    expected = losses.ContrastiveLoss()(z, labels) + 3.0 * brute_force_logdets(flow, x).mean()
    assert loss_fn(z, labels).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": torch.nn.MSELoss()}, "loss must be a PML BaseMetricLossFunction, got MSELoss"),
        ({"embedder": torch.nn.Linear(8, 5)}, "embedder must be a FlowEmbedder or DuelingFlowEmbedder"),
        ({"embedder": "flow", "reward_weight": 1.0}, r"reward_weight != 0 needs a DuelingFlowEmbedder"),
        ({"penalty": "abs"}, "penalty must be one of"),
        ({"reward": "square"}, "reward must be one of"),
        ({"reward": "hinge", "reward_weight": 0.5}, r"reward='hinge' needs reward_target > 0, got 0.0"),
        ({"reward": "hinge", "reward_weight": 0.5, "reward_target": -1.0}, "needs reward_target > 0"),
        ({"interpolation_eps": 0.0}, "interpolation_eps must be a finite number > 0"),
        ({"penalty_weight": math.inf}, "penalty_weight must be a finite"),
        ({"reward_target": math.nan}, "reward_target must be a finite"),
        ({"penalty_weight": -0.1}, r"penalty_weight must be >= 0 \(a negative weight flips the objective\), got -0.1"),
        ({"reward_weight": -1.0}, "reward_weight must be >= 0"),
        ({"reward_weight": "high"}, "reward_weight must be a finite real number, got 'high'"),
        ({"interpolation_eps": "half"}, "interpolation_eps must be a finite real number, got 'half'"),
    ],
)
def test_bad_arguments(kwargs, match):
    flow = FlowEmbedder(8, 5, hidden_features=10)
    args = {"loss": losses.ContrastiveLoss(), "embedder": DuelingFlowEmbedder(8, 5, hidden_features=10), **kwargs}
    if args["embedder"] == "flow":
        args["embedder"] = flow
    with pytest.raises(ValueError, match=match):
        JacobianDeterminantLoss(**args)


def test_bad_calls():
    emb = DuelingFlowEmbedder(8, 5, hidden_features=10)
    labels = torch.tensor([0, 0, 1, 1])
    loss_fn = JacobianDeterminantLoss(losses.ContrastiveLoss(), emb, reward_weight=1.0, interpolation_eps=1.0)
    with pytest.raises(RuntimeError, match="has not run yet"):
        loss_fn(torch.randn(4, 5), labels)
    z = emb(torch.randn(4, 8))
    with pytest.raises(ValueError, match="labels are required when interpolation_eps is set"):
        loss_fn(z, None)
    with pytest.raises(ValueError, match=r"embeddings \(\(3, 5\)\) were not returned by FlowEmbedder's forward"):
        loss_fn(z[:3], labels[:3])
    with pytest.raises(ValueError, match=r"embeddings must be 2-D with shape \(N, out_features=5\)"):
        loss_fn(torch.randn(4, 6), labels)
    with pytest.raises(ValueError, match="embeddings contains non-finite"):
        loss_fn(torch.full((4, 5), math.inf), labels)
    with torch.no_grad():
        z = emb(torch.randn(4, 8))
    with pytest.raises(RuntimeError, match="branch 2 did not run"):
        loss_fn(z, labels)
