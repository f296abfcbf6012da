"""functional.skewed_mean and the streaming kernel against closed forms and brute force."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pml_regularizers import functional as F

from .conftest import TEST_DTYPES, rtol_for


def unit_rows(n, d, dtype=torch.float64):
    return torch.nn.functional.normalize(torch.randn(n, d, dtype=dtype), dim=1)


def upper_pairs(m):
    iu = torch.triu_indices(m.shape[0], m.shape[0], 1)
    return m[iu[0], iu[1]]


def test_lam_zero_is_the_arithmetic_mean():
    x = torch.randn(1000, dtype=torch.float64)
    assert F.skewed_mean(x, 0.0).item() == pytest.approx(x.mean().item(), rel=1e-14, abs=1e-15)


def test_small_lam_tends_continuously_to_the_mean():
    # SM_lam - mean = lam * var / 2 + O(lam^2): the second-order bound makes this check fail if the
    # small-lam branch loses precision (a plain logsumexp form is off by ~1e-6 at lam=1e-10)
    x = torch.randn(500, dtype=torch.float64)
    for lam in [1e-10, -1e-8, 1e-6]:
        expected = x.mean() + lam * x.var(unbiased=False) / 2
        assert abs(F.skewed_mean(x, lam).item() - expected.item()) < 10 * lam**2 + 1e-15


def test_wang_isola_uniformity_is_a_special_case():
    u = unit_rows(40, 6)
    t = 2.0
    d2 = upper_pairs(torch.cdist(u, u) ** 2)
    uniformity = torch.log(torch.exp(-t * d2).mean())
    s = upper_pairs(u @ u.T)
    assert (-2 * t + 2 * t * F.skewed_mean(s, 2 * t)).item() == pytest.approx(uniformity.item(), rel=1e-12)


@pytest.mark.parametrize("s_exp", [0.5, 1.0, 2.0])
def test_riesz_energy_is_a_special_case(s_exp):
    u = unit_rows(30, 4)
    d = upper_pairs(torch.cdist(u, u))
    energy = (d ** (-s_exp)).sum()
    via_sm = d.numel() * torch.exp(-s_exp * F.skewed_mean(torch.log(d), -s_exp))
    assert via_sm.item() == pytest.approx(energy.item(), rel=1e-12)


def test_log_energy_is_a_special_case():
    u = unit_rows(30, 4)
    d = upper_pairs(torch.cdist(u, u))
    energy = torch.log(1 / d).sum()
    assert (-d.numel() * F.skewed_mean(torch.log(d), 0.0)).item() == pytest.approx(energy.item(), rel=1e-12)


def test_infinite_lam_gives_max_and_min_and_large_lam_approaches_them():
    x = torch.randn(200, dtype=torch.float64)
    assert F.skewed_mean(x, math.inf).item() == x.max().item()
    assert F.skewed_mean(x, -math.inf).item() == x.min().item()
    for lam in [1e3, 1e6, 1e9]:
        # max + log(1/N)/lam <= SM_lam <= max
        assert x.max().item() - math.log(x.numel()) / lam <= F.skewed_mean(x, lam).item() <= x.max().item()
        assert x.min().item() <= F.skewed_mean(x, -lam).item() <= x.min().item() + math.log(x.numel()) / lam


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-50, 50), min_size=1, max_size=40),
    lam1=st.floats(-100, 100),
    lam2=st.floats(-100, 100),
)
def test_between_min_and_max_and_monotone_in_lam(values, lam1, lam2):
    x = torch.tensor(values, dtype=torch.float64)
    lo, hi = sorted([lam1, lam2])
    a, b = F.skewed_mean(x, lo).item(), F.skewed_mean(x, hi).item()
    tol = 1e-9 * (1 + x.abs().max().item())
    assert x.min().item() - tol <= a <= b + tol
    assert b <= x.max().item() + tol


def test_gradient_is_softmax_and_gradcheck():
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    for lam in [3.0, -2.0, 0.0]:
        (g,) = torch.autograd.grad(F.skewed_mean(x, lam, dim=1).sum(), x)
        expected = torch.softmax(lam * x, dim=1)
        torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-14)
        assert torch.autograd.gradcheck(lambda t, lam=lam: F.skewed_mean(t, lam, dim=(0, 1)), (x,))


def test_large_lam_does_not_overflow():
    for dtype in TEST_DTYPES:
        x = (10 * torch.randn(100)).to(dtype)
        xd = x.double()
        for lam in [1e4, -1e4, 30.0]:
            v = F.skewed_mean(x, lam).double()
            # float64 log-sum-exp of the same (rounded) entries: (logsumexp(lam x) - log N) / lam
            expected = (torch.logsumexp(lam * xd, 0) - math.log(len(xd))) / lam
            assert math.isfinite(v.item())
            torch.testing.assert_close(v, expected, rtol=rtol_for(dtype), atol=1e-6)


def test_mask_equals_the_subset():
    x = torch.randn(6, 9, dtype=torch.float64)
    mask = torch.rand(6, 9) > 0.4
    mask[:, 0] = True
    got = F.skewed_mean(x, 2.5, dim=1, mask=mask)
    expected = torch.stack([F.skewed_mean(x[i][mask[i]], 2.5) for i in range(6)])
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lam", [3.0, 0.0, -2.0])
def test_half_types_reduce_more_entries_than_their_largest_number(dtype, lam):
    # 70000 entries: more than float16 can count (65504), so counts and sums must not stay in it
    x = (torch.rand(70000, generator=torch.Generator().manual_seed(0)) - 0.25).to(dtype)  # mean 0.25
    expected = F.skewed_mean(x.double(), lam)
    got = F.skewed_mean(x, lam)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, rtol=1e-2, atol=1e-3)


def test_keepdim_and_dims():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    got = F.skewed_mean(x, 1.0, dim=(0, 2), keepdim=True)
    assert got.shape == (1, 4, 1)
    for j in range(4):  # each kept index reduces over its own 3 x 5 slice
        expected = torch.logsumexp(x[:, j, :].reshape(-1), 0) - math.log(15)
        torch.testing.assert_close(got[0, j, 0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F.skewed_mean(x, 1.0, dim=-1), torch.logsumexp(x, -1) - math.log(5))
    assert F.skewed_mean(x, 1.0).shape == ()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"x": torch.arange(5), "lam": 1.0}, "floating-point"),
        ({"x": torch.randn(5), "lam": math.nan}, "lam must be"),
        ({"x": torch.randn(5), "lam": 1.0, "mask": torch.ones(5)}, "boolean"),
        (
            {
                "x": torch.randn(2, 5),
                "lam": 1.0,
                "dim": 1,
                "mask": torch.tensor([True, False]).unsqueeze(1).expand(2, 5).clone() & False,
            },
            "no entry",
        ),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.skewed_mean(**kwargs)


@pytest.mark.parametrize("group_size", [1, 3])
@pytest.mark.parametrize("transform", ["similarity", "neg_chord"])
@pytest.mark.parametrize("lam", [5.0, -2.0, 0.0])
def test_gram_kernel_matches_full_matrix(group_size, transform, lam):
    u = unit_rows(24, 5)
    s = u @ u.T
    g = torch.arange(24) // group_size
    keep = g.unsqueeze(1) < g.unsqueeze(0)
    a = s[keep] if transform == "similarity" else -torch.cdist(u, u)[keep]
    expected = F.skewed_mean(a, lam)
    for block in [1, 5, 24]:
        got = F.gram_pairwise_skewed_mean(u, lam, group_size, transform, block_size=block)
        assert got.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("transform, power", [("similarity", 1.0), ("neg_chord", 1.0), ("neg_chord", 2.0)])
def test_gram_kernel_gradcheck(transform, power):
    x = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    for lam in [3.0, 0.0]:
        fn = lambda t, lam=lam: F.gram_pairwise_skewed_mean(  # noqa: E731
            torch.nn.functional.normalize(t, dim=1), lam, 1, transform, power, block_size=4
        )
        assert torch.autograd.gradcheck(fn, (x,))


def test_gram_kernel_refuses_a_second_derivative_that_would_leave_it_out():
    """With another term that has a second derivative, create_graph=True used to give a Hessian
    without the skewed mean's part; it raises now, and the explicit skewed mean has one."""
    u = torch.nn.functional.normalize(torch.randn(6, 3, dtype=torch.float64), dim=1).requires_grad_()
    value = F.gram_pairwise_skewed_mean(u, 2.0) + u.pow(3).sum()
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(value, u, create_graph=True)
    (first,) = torch.autograd.grad(F.gram_pairwise_skewed_mean(u, 2.0), u)  # plain backward works
    i, j = torch.triu_indices(6, 6, offset=1)

    def explicit(v: torch.Tensor) -> torch.Tensor:
        return F.skewed_mean((v @ v.T)[i, j], 2.0)

    torch.testing.assert_close(first, torch.autograd.grad(explicit(u), u)[0])
    assert torch.autograd.gradgradcheck(explicit, (u,))


def test_gram_kernel_coincident_rows_give_finite_gradients():
    u = unit_rows(6, 3)
    u = torch.cat([u, u[:1]]).requires_grad_(True)  # rows 0 and 6 coincide
    v = F.gram_pairwise_skewed_mean(u, 4.0, transform="neg_chord")
    (g,) = torch.autograd.grad(v, u)
    assert torch.isfinite(g).all()


def _brute_force_pair_values(u, group_size, transform, power):
    """Pair values over unordered pairs of different groups, by a Python loop in float64."""
    u = u.double()
    out = []
    for i in range(len(u)):
        for j in range(i + 1, len(u)):
            if i // group_size != j // group_size:
                s = torch.dot(u[i], u[j])
                out.append(s if transform == "similarity" else -((2 - 2 * s).clamp_min(0) ** (power / 2)))
    return torch.stack(out)


def _mp_skewed_mean(values, lam):
    """The skewed mean in 50-digit arithmetic (mpmath), independent of the package's formulas."""
    import mpmath

    with mpmath.workdps(50):
        a = [mpmath.mpf(float(v)) for v in values]
        if lam == 0:
            return float(mpmath.fsum(a) / len(a))
        lam = mpmath.mpf(lam)
        return float(mpmath.log(mpmath.fsum(mpmath.exp(lam * x) for x in a) / len(a)) / lam)


TINY_TO_HUGE_LAMS = [s * m for m in (1e-12, 1e-8, 1e-4, 1.0, 1e3) for s in (1, -1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transform, power, group_size", [("similarity", 1.0, 1), ("neg_chord", 1.0, 3)])
@pytest.mark.parametrize("lam", TINY_TO_HUGE_LAMS)
def test_gram_kernel_value_and_gradient_match_brute_force_from_tiny_to_huge_lam(
    dtype, transform, power, group_size, lam
):
    u64 = unit_rows(9, 4)
    values = _brute_force_pair_values(u64, group_size, transform, power)
    expected = _mp_skewed_mean(values, lam)
    # the gradient of SM is softmax(lam * a) pushed through the pair values: exact in float64
    leaf = u64.clone().requires_grad_(True)
    a = _brute_force_pair_values(leaf, group_size, transform, power)
    ((torch.logsumexp(lam * a, 0) - math.log(len(a))) / lam).backward()
    tol = {"rel": 1e-11, "abs": 1e-13} if dtype == torch.float64 else {"rel": 1e-6, "abs": 1e-6}
    for block in [1, 2, 4, 9, None]:
        u = u64.to(dtype).requires_grad_(True)
        got = F.gram_pairwise_skewed_mean(u, lam, group_size, transform, power, block_size=block)
        assert got.dtype == dtype
        assert got.item() == pytest.approx(expected, **tol), block
        (grad,) = torch.autograd.grad(got, u)
        torch.testing.assert_close(grad.double(), leaf.grad, rtol=tol["rel"] * 10, atol=tol["abs"] * 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam", [1e39, 1e300, -1e300])
def test_lam_beyond_the_dtypes_range_gives_the_extreme(dtype, lam):
    """|lam| above the dtype's largest number used to become inf, and inf * 0 at the extreme NaN."""
    u = unit_rows(9, 4).to(dtype)
    pairs = upper_pairs(u @ u.T)
    extreme = (pairs.max() if lam > 0 else pairs.min()).item()
    assert F.skewed_mean(pairs, lam).item() == extreme
    leaf = u.clone().requires_grad_(True)
    got = F.gram_pairwise_skewed_mean(leaf, lam, block_size=4)
    assert got.item() == pytest.approx(extreme, rel=1e-6)
    (grad,) = torch.autograd.grad(got, leaf)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gram_kernel_with_large_unnormalised_values_does_not_overflow():
    """lam * value above float32's range (1e33 * 1e6): the kernel scales only the gaps to the
    extreme value by lam, so the largest pair wins instead of inf - inf."""
    u = torch.randn(12, 4, dtype=torch.float64) * 1e3
    pairs = upper_pairs(u @ u.T)
    for lam, extreme in [(1e33, pairs.max().item()), (-1e33, pairs.min().item())]:
        got = F.gram_pairwise_skewed_mean(u.float(), lam, block_size=5)
        assert got.item() == pytest.approx(extreme, rel=1e-6)


@pytest.mark.slow
def test_gram_kernel_tends_to_the_mean_as_lam_shrinks():
    u = unit_rows(300, 8, dtype=torch.float32)
    pairs = upper_pairs(u.double() @ u.double().T)
    mean, var = pairs.mean().item(), pairs.var(unbiased=False).item()
    for lam in [1e-4, 1e-8, 1e-12, 1e-30, 1e-45, 0.0]:
        got = F.gram_pairwise_skewed_mean(u, lam).item()
        assert got == pytest.approx(mean + lam * var / 2, abs=2e-7), lam  # SM = mean + lam var/2 + O(lam^2)


@pytest.mark.slow
def test_row_skewed_means_matches_loops_and_checkpointing_keeps_gradients():
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    dist = lambda q, r: -torch.cdist(q, r)  # noqa: E731
    rows = F.row_skewed_means(x, dist, 2.0, group_size=2, block_size=3)
    m = dist(x, x)
    for i in range(10):
        others = [j for j in range(10) if j // 2 != i // 2]
        assert rows[i].item() == pytest.approx(F.skewed_mean(m[i, others], 2.0).item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda t: F.row_skewed_means(t, dist, 2.0, 2, 3).sum(), (x,))


def test_pairwise_cosine_stats():
    x = torch.randn(12, 5, dtype=torch.float64)
    u = torch.nn.functional.normalize(x, dim=1)
    g = torch.arange(12) // 3
    s = (u @ u.T)[g.unsqueeze(1) < g.unsqueeze(0)]
    best, mean = F.pairwise_cosine_stats(x, group_size=3, block_size=5)
    assert best == pytest.approx(s.max().item(), rel=1e-12)
    assert mean == pytest.approx(s.mean().item(), rel=1e-12)


def _dot(q, r):
    return q @ r.T


@pytest.mark.parametrize(
    "call",
    [
        F.gram_pairwise_skewed_mean,
        lambda x, **kw: F.row_skewed_means(x, _dot, **kw),
        lambda x, **kw: F.pairwise_cosine_stats(x, **{k: v for k, v in kw.items() if k != "lam"}),
    ],
    ids=["gram_pairwise_skewed_mean", "row_skewed_means", "pairwise_cosine_stats"],
)
@pytest.mark.parametrize(
    "rows, kwargs, match",
    [
        (5, {"group_size": 2}, r"rows of \w+ \(5\) must be a multiple of group_size \(2\)"),
        (3, {"group_size": 3}, "at least 2 groups"),
        (1, {}, "at least 2 groups"),
        (4, {"group_size": 0}, "group_size must be an int >= 1, got 0"),
        (4, {"block_size": -2}, "block_size must be an int >= 1 or None, got -2"),
        (None, {}, r"must be a 2-D tensor of shape \(rows, dim\), got \(3,\)"),
    ],
)
def test_grouped_row_functions_reject_bad_shapes(call, rows, kwargs, match):
    x = torch.randn(3) if rows is None else torch.randn(rows, 3)
    with pytest.raises(ValueError, match=match):
        call(x, lam=2.0, **kwargs)


def test_default_block_size():
    assert F.default_block_size(100) == 64
    assert F.default_block_size(11318) == (1 << 21) // 11318
    assert F.default_block_size(10) == 10
