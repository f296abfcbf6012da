"""DVMLMiner's tuples against brute-force enumeration: every tuple is valid (real anchor, positives
and negatives from one draw with agreeing / disagreeing labels, indices in range, no own draws when
excluded), and the set equals what the wrapped PML miner's rule selects draw by draw."""

import itertools

import pytest
import torch
from pytorch_metric_learning import miners

from pml_regularizers import DVMLMiner
from pml_regularizers import functional as F

B, T, D = 9, 3, 4


def batch(seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (B,), generator=g)
    real = torch.randn(B, D, generator=g, dtype=torch.float64)
    synthetic = torch.randn(B * T, D, generator=g, dtype=torch.float64)
    return real, labels, synthetic, labels.repeat_interleave(T)


def candidates(labels, exclude_own):
    """Brute force: every (anchor, positive row, negative row) with both refs in one draw."""
    for a, t in itertools.product(range(B), range(T)):
        for j, k in itertools.product(range(B), repeat=2):
            if labels[j] == labels[a] != labels[k] and not (exclude_own and j == a):
                yield a, j * T + t, k * T + t


def as_set(tuples):
    return set(zip(*(x.tolist() for x in tuples)))


def assert_valid(tuples, labels, exclude_own):
    ref_labels = labels.repeat_interleave(T)
    if len(tuples) == 3:
        a, p, n = tuples
        pairs = [(a, p, True), (a, n, False)]
        assert bool(((p % T) == (n % T)).all()), "positive and negative from different draws"
    else:
        a1, p, a2, n = tuples
        pairs = [(a1, p, True), (a2, n, False)]
    for anchors, refs, positive in pairs:
        assert anchors.dtype == refs.dtype == torch.long
        assert bool(((anchors >= 0) & (anchors < B)).all()), "anchor out of the real batch"
        assert bool(((refs >= 0) & (refs < B * T)).all()), "reference out of the synthetic batch"
        same = labels[anchors] == ref_labels[refs]
        assert bool(same.all() if positive else (~same).all())
        if positive and exclude_own:
            assert not bool((refs // T == anchors).any()), "own draw used as positive"


@pytest.mark.parametrize("exclude_own", [True, False])
def test_no_inner_miner_gives_every_draw_aligned_triplet(exclude_own):
    real, labels, synthetic, ref_labels = batch()
    tuples = DVMLMiner(exclude_own_samples=exclude_own)(real, labels, synthetic, ref_labels)
    assert_valid(tuples, labels, exclude_own)
    expected = set(candidates(labels, exclude_own))
    assert as_set(tuples) == expected and len(tuples[0]) == len(expected)  # no duplicates


@pytest.mark.parametrize("kind", ["all", "semihard", "hard", "easy"])
@pytest.mark.parametrize("exclude_own", [True, False])
def test_triplet_margin_miner_per_draw(kind, exclude_own):
    real, labels, synthetic, ref_labels = batch(1)
    margin = 0.3
    miner = DVMLMiner(miners.TripletMarginMiner(margin=margin, type_of_triplets=kind), exclude_own_samples=exclude_own)
    tuples = miner(real, labels, synthetic, ref_labels)
    assert_valid(tuples, labels, exclude_own)

    u_real = torch.nn.functional.normalize(real, dim=1)
    u_syn = torch.nn.functional.normalize(synthetic, dim=1)
    expected = set()
    for a, p, n in candidates(labels, exclude_own):
        m = float((u_real[a] - u_syn[n]).norm() - (u_real[a] - u_syn[p]).norm())
        keep = {"all": m <= margin, "semihard": 0 < m <= margin, "hard": m <= 0, "easy": m > margin}
        if keep[kind]:
            expected.add((a, p, n))
    assert expected, "the check needs a non-empty reference set"
    assert as_set(tuples) == expected and len(tuples[0]) == len(expected)


@pytest.mark.parametrize("exclude_own", [True, False])
def test_multi_similarity_miner_per_draw(exclude_own):
    real, labels, synthetic, ref_labels = batch(2)
    eps = 0.1
    miner = DVMLMiner(miners.MultiSimilarityMiner(epsilon=eps), exclude_own_samples=exclude_own)
    tuples = miner(real, labels, synthetic, ref_labels)
    assert len(tuples) == 4
    assert_valid(tuples, labels, exclude_own)

    s = torch.nn.functional.normalize(real, dim=1) @ torch.nn.functional.normalize(synthetic, dim=1).T
    pos, neg = set(), set()
    for a, t in itertools.product(range(B), range(T)):
        refs = [j * T + t for j in range(B)]
        # the inner miner sees the anchor's own draw (it is removed from its output afterwards)
        pos_sims = [float(s[a, r]) for r in refs if labels[r // T] == labels[a]]
        neg_sims = [float(s[a, r]) for r in refs if labels[r // T] != labels[a]]
        hardest_neg = max(neg_sims, default=-float("inf"))
        hardest_pos = min(pos_sims, default=float("inf"))
        for r in refs:
            if labels[r // T] == labels[a]:
                if float(s[a, r]) - eps < hardest_neg and not (exclude_own and r // T == a):
                    pos.add((a, r))
            elif float(s[a, r]) + eps > hardest_pos:
                neg.add((a, r))
    a1, p, a2, n = tuples
    assert pos and neg
    assert set(zip(a1.tolist(), p.tolist())) == pos and len(a1) == len(pos)
    assert set(zip(a2.tolist(), n.tolist())) == neg and len(a2) == len(neg)


def test_a_plain_miner_mixes_draws_and_uses_own_samples_where_this_one_does_not():
    real, labels, synthetic, ref_labels = batch(3)
    plain = miners.TripletMarginMiner(margin=10.0)(real, labels, synthetic, ref_labels)
    a, p, n = plain
    assert bool(((p % T) != (n % T)).any()) and bool((p // T == a).any())
    ours = DVMLMiner(miners.TripletMarginMiner(margin=10.0))(real, labels, synthetic, ref_labels)
    assert as_set(ours) == set(candidates(labels, True)) < as_set(plain)


def test_stats_are_summed_over_draws():
    real, labels, synthetic, ref_labels = batch(4)
    miner = DVMLMiner(miners.TripletMarginMiner(margin=10.0), collect_stats=True)
    tuples = miner(real, labels, synthetic, ref_labels)
    assert miner.num_triplets == len(tuples[0]) == len(set(candidates(labels, True)))
    # the inner miner saw each anchor's own draw as a positive, in one triplet per negative
    own = sum(T * int((labels != labels[a]).sum()) for a in range(B))
    assert miner.num_own_samples_removed == own


def test_draw_aligned_triplets_layout():
    labels = torch.tensor([0, 0, 1])
    a, p, n = F.draw_aligned_triplets(labels, 2, exclude_own=True)
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == [(0, 2, 4), (1, 0, 4), (0, 3, 5), (1, 1, 5)]


def test_errors():
    real, labels, synthetic, ref_labels = batch()
    miner = DVMLMiner()
    with pytest.raises(ValueError, match="needs the synthetic samples as ref_emb"):
        miner(real, labels)
    with pytest.raises(ValueError, match="T >= 1 synthetic samples per real row"):
        miner(real, labels, synthetic[:-1], ref_labels[:-1])
    with pytest.raises(ValueError, match=r"ref_labels must be labels.repeat_interleave\(T\)"):
        miner(real, labels, synthetic, labels.repeat(T))
    with pytest.raises(ValueError, match="width"):
        miner(real, labels, synthetic[:, :2], ref_labels)
    with pytest.raises(ValueError, match="miner must be a PML BaseMiner"):
        DVMLMiner(torch.nn.Identity())
    with pytest.raises(ValueError, match="plain PML miner"):
        DVMLMiner(DVMLMiner())
    with pytest.raises(ValueError, match="exclude_own_samples must be a bool"):
        DVMLMiner(exclude_own_samples=1)
