"""SkewedMeanRegularizer against brute-force double loops, gradcheck, and its error messages."""

import math

import pytest
import torch
from pytorch_metric_learning.distances import (
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
)
from pytorch_metric_learning.reducers import MeanReducer, SumReducer

from pml_regularizers import SkewedMeanRegularizer

from .conftest import TEST_DTYPES, rtol_for

DISTANCES = {
    "cosine": CosineSimilarity,
    "cosine_squared": lambda: CosineSimilarity(power=2),  # no streaming form: the row-block path
    "dot": lambda: DotProductSimilarity(normalize_embeddings=False),
    "l2": LpDistance,
    "l2_squared": lambda: LpDistance(power=2),
    "l2_raw": lambda: LpDistance(normalize_embeddings=False),
    "snr": SNRDistance,
}


def brute_force(x, lam, distance, group_size=1, rowwise=False):
    """Double loop over pairs in float64, straight from the definition."""
    x = x.double()
    m = distance(x, x)
    sign = 1.0 if distance.is_inverted else -1.0
    n = x.shape[0]

    def sm(values):
        a = torch.stack(values)
        if lam == 0:
            return a.mean()
        return (torch.logsumexp(lam * a, 0) - math.log(len(values))) / lam

    if rowwise:
        return torch.stack(
            [sm([sign * m[i, j] for j in range(n) if j // group_size != i // group_size]) for i in range(n)]
        ).mean()
    # ordered pairs: for symmetric distances the same as i < j (each value twice), and the only
    # symmetric definition for asymmetric ones such as SNRDistance
    return sm([sign * m[i, j] for i in range(n) for j in range(n) if j // group_size != i // group_size])


@pytest.mark.parametrize("dtype", TEST_DTYPES)
@pytest.mark.parametrize("dist_name", list(DISTANCES))
@pytest.mark.parametrize("form", ["pairwise", "rowwise"])
@pytest.mark.parametrize("lam", [4.0, -3.0, 0.0])
@pytest.mark.parametrize("group_size", [1, 2])
def test_matches_brute_force(dtype, dist_name, form, lam, group_size):
    x = torch.randn(12, 6).to(dtype).requires_grad_(True)
    reg = SkewedMeanRegularizer(
        lam=lam, form=form, centers_per_class=group_size, block_size=5, distance=DISTANCES[dist_name]()
    )
    value = reg(x)
    assert value.dtype == dtype
    x64 = x.detach().double().requires_grad_(True)
    expected = brute_force(x64, lam, DISTANCES[dist_name](), group_size, form == "rowwise")
    torch.testing.assert_close(value.double(), expected, rtol=rtol_for(dtype), atol=1e-6)
    (g,) = torch.autograd.grad(value, x)
    (g_expected,) = torch.autograd.grad(expected, x64)
    assert g.dtype == dtype
    atol = 1e-3 if dtype == torch.float16 else 1e-6
    torch.testing.assert_close(g.double(), g_expected, rtol=rtol_for(dtype), atol=atol)


@pytest.mark.parametrize("dist_name", ["cosine", "l2", "l2_raw", "dot"])
@pytest.mark.parametrize("form", ["pairwise", "rowwise"])
@pytest.mark.slow
def test_gradcheck_float64(dist_name, form):
    x = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    reg = SkewedMeanRegularizer(lam=3.0, form=form, centers_per_class=1, block_size=4, distance=DISTANCES[dist_name]())
    assert torch.autograd.gradcheck(reg, (x,))


def test_block_size_does_not_change_value_or_gradient():
    x = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    results = []
    for block in [1, 7, 30, None]:
        v = SkewedMeanRegularizer(lam=6.0, centers_per_class=3, block_size=block)(x)
        (g,) = torch.autograd.grad(v, x)
        results.append((v, g))
    for v, g in results[1:]:
        torch.testing.assert_close(v, results[0][0], rtol=1e-13, atol=0)
        torch.testing.assert_close(g, results[0][1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", TEST_DTYPES)
@pytest.mark.parametrize("form", ["pairwise", "rowwise"])
@pytest.mark.parametrize("dist_name", ["cosine", "l2"])
def test_small_lam_gives_the_plain_mean_whatever_the_block_size(dtype, form, dist_name):
    x = torch.randn(7, 5).to(dtype)
    mean = brute_force(x, 0.0, DISTANCES[dist_name]()).item()
    for lam in [1e-12, -1e-8, 1e-8]:
        for block in [1, 3, None]:
            reg = SkewedMeanRegularizer(lam=lam, form=form, block_size=block, distance=DISTANCES[dist_name]())
            assert reg(x).item() == pytest.approx(mean, rel=rtol_for(dtype), abs=1e-6), (lam, block)


def test_equals_naive_full_matrix_at_1000_rows_float64():
    w = torch.randn(1000, 64, dtype=torch.float64)
    u = torch.nn.functional.normalize(w, dim=1)
    iu = torch.triu_indices(1000, 1000, 1)
    a = (u @ u.T)[iu[0], iu[1]]
    naive = (torch.logsumexp(4.0 * a, 0) - math.log(a.numel())) / 4.0
    got = SkewedMeanRegularizer(lam=4.0)(w)
    assert got.item() == pytest.approx(naive.item(), rel=1e-5)
    assert got.item() == pytest.approx(naive.item(), rel=1e-12)


def test_large_lam_approaches_the_max_min_objective():
    w = torch.randn(20, 5, dtype=torch.float64)
    u = torch.nn.functional.normalize(w, dim=1)
    iu = torch.triu_indices(20, 20, 1)
    max_sim = (u @ u.T)[iu[0], iu[1]].max().item()
    lam = 1e7
    v = SkewedMeanRegularizer(lam=lam)(w).item()
    assert max_sim - math.log(iu.shape[1]) / lam - 1e-12 <= v <= max_sim + 1e-12  # both bounds are tight


def test_rowwise_form_goes_through_the_reducer():
    x = torch.randn(10, 4, dtype=torch.float64)
    mean = SkewedMeanRegularizer(form="rowwise")(x)
    total = SkewedMeanRegularizer(form="rowwise", reducer=SumReducer())(x)
    assert total.item() == pytest.approx(10 * mean.item(), rel=1e-12)
    # pairwise form is already reduced: the reducer leaves it alone
    p_mean = SkewedMeanRegularizer(reducer=MeanReducer())(x)
    p_sum = SkewedMeanRegularizer(reducer=SumReducer())(x)
    assert p_mean.item() == p_sum.item()


@pytest.mark.slow
def test_minimising_spreads_the_closest_pair_more_than_the_plain_mean():
    """The point of the skew: lam > 0 separates the closest centers; lam = 0 only moves the mean."""
    torch.manual_seed(1)
    start = torch.nn.functional.normalize(torch.randn(24, 3, dtype=torch.float64) + 2.0, dim=1)
    min_dist = {}
    for lam in [0.0, 8.0]:
        w = start.clone().requires_grad_(True)
        opt = torch.optim.SGD([w], lr=0.5)
        reg = SkewedMeanRegularizer(lam=lam)
        for _ in range(300):
            opt.zero_grad()
            reg(w).backward()
            opt.step()
            with torch.no_grad():
                w.copy_(torch.nn.functional.normalize(w, dim=1))
        d = torch.cdist(w.detach(), w.detach())
        min_dist[lam] = d[~torch.eye(24, dtype=torch.bool)].min().item()
    start_d = torch.cdist(start, start)[~torch.eye(24, dtype=torch.bool)].min().item()
    assert start_d < 0.01
    assert min_dist[8.0] > 0.4  # measured 0.60
    assert min_dist[8.0] > 5 * min_dist[0.0]  # measured 0.022 at lam = 0


@pytest.mark.parametrize("form", ["pairwise", "rowwise"])
def test_stats_are_recorded_and_correct(form):
    x = torch.randn(12, 5, dtype=torch.float64)
    reg = SkewedMeanRegularizer(lam=2.0, form=form, centers_per_class=2, collect_stats=True)
    reg(x)
    assert set(["skewed_mean", "min_distance", "mean_similarity"]) <= set(reg._record_these_stats)
    u = torch.nn.functional.normalize(x, dim=1)
    g = torch.arange(12) // 2
    keep = g.unsqueeze(1) < g.unsqueeze(0)
    expected = brute_force(x, 2.0, CosineSimilarity(), group_size=2, rowwise=form == "rowwise")
    assert reg.skewed_mean == pytest.approx(expected.item(), rel=1e-12)  # rowwise: the mean over rows
    assert reg.mean_similarity == pytest.approx((u @ u.T)[keep].mean().item(), rel=1e-12)
    assert reg.min_distance == pytest.approx(torch.cdist(u, u)[keep].min().item(), rel=1e-9)


def test_stats_off_by_default():
    reg = SkewedMeanRegularizer()
    reg(torch.randn(5, 3))
    assert not hasattr(reg, "min_distance")


def test_half_input_is_computed_in_float32():
    w = torch.randn(64, 16)
    lam = 40.0  # exp(lam * s) overflows float16 arithmetic; the float32 computation does not
    v16 = SkewedMeanRegularizer(lam=lam)(w.half())
    v32 = SkewedMeanRegularizer(lam=lam)(w)
    assert v16.dtype == torch.float16 and torch.isfinite(v16)
    assert v16.item() == pytest.approx(v32.item(), rel=1e-2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": math.inf}, "lam must be a finite"),
        ({"lam": math.nan}, "lam must be a finite"),
        ({"lam": "four"}, "lam must be a finite real number, got 'four'"),
        ({"form": "both"}, "form must be"),
        ({"centers_per_class": 0}, "centers_per_class must be a positive int"),
        ({"centers_per_class": 2.0}, "centers_per_class must be a positive int"),
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"block_size": -3}, "block_size must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SkewedMeanRegularizer(**kwargs)


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (torch.randn(4), {}, r"2-D with shape \(rows, embedding_size\), got shape \(4,\)"),
        (torch.randn(2, 3, 4), {}, "2-D"),
        (torch.ones(4, 3, dtype=torch.long), {}, "floating-point dtype, got torch.int64"),
        (torch.randn(1, 3), {}, "at least 2 classes"),
        (torch.randn(6, 3), {"centers_per_class": 4}, r"rows of x \(6\) must be divisible by centers_per_class \(4\)"),
        (torch.randn(3, 3), {"centers_per_class": 3}, "at least 2 classes"),
        (torch.randn(6, 3), {"num_classes": 4}, "num_classes \\* centers_per_class = 4 rows, got 6"),
        (torch.tensor([[0.0, 1.0], [math.nan, 1.0]]), {}, "non-finite"),
        ("not a tensor", {}, "torch.Tensor"),
    ],
)
def test_bad_input(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SkewedMeanRegularizer(**kwargs)(x)
