"""BenchAccuracyCalculator against a brute-force numpy reference (loops over queries, full sort)."""

import numpy as np
import pytest

from pml_regularizers.bench.protocol.metrics import BenchAccuracyCalculator
from pml_regularizers.bench.results.metric_names import DEFAULT_METRICS, METRIC_LABELS, RECALL_KS

# class sizes 1..6: class 0 has a single item (a "lone" query when the reference is the query set),
# and the largest class (6) gives only 5 neighbours with k="max_bin_count", fewer than Recall@8 needs
CLASS_SIZES = [1, 2, 3, 3, 4, 5, 6, 2, 4]


def make_data(sizes, dim, seed, spread=1.2):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centers = spread * rng.standard_normal((len(sizes), dim))
    x = centers[labels] + rng.standard_normal((len(labels), dim))
    return x.astype(np.float32), labels


def neighbour_order(query, reference, ref_includes_query):
    """Per query: reference indices by increasing distance (itself removed) and the sorted gaps."""
    q, r = query.astype(np.float64), reference.astype(np.float64)
    orders = []
    for i in range(len(q)):
        d = np.array([np.sum((r[j] - q[i]) ** 2) for j in range(len(r))])
        idx = [j for j in np.argsort(d) if not (ref_includes_query and j == i)]
        top = np.sort(d[idx])[:12]
        assert np.min(np.diff(top)) > 1e-4, "test data has a near tie; pick another seed"
        orders.append(np.array(idx))
    return orders


def brute_force(query, q_labels, reference, r_labels, ref_includes_query):
    """Recall@k, P@1 and MAP@R (Musgrave et al. 2020) over queries with a same-label reference."""
    results = {f"recall_at_{k}": [] for k in RECALL_KS}
    results["precision_at_1"], results["mean_average_precision_at_r"] = [], []
    for i, order in enumerate(neighbour_order(query, reference, ref_includes_query)):
        relevant = r_labels[order] == q_labels[i]
        r = int(relevant.sum())
        if r == 0:
            continue
        for k in RECALL_KS:
            results[f"recall_at_{k}"].append(float(relevant[:k].any()))
        results["precision_at_1"].append(float(relevant[0]))
        ap = sum(relevant[: j + 1].sum() / (j + 1) for j in range(r) if relevant[j]) / r
        results["mean_average_precision_at_r"].append(ap)
    return {name: float(np.mean(v)) for name, v in results.items()}


BRUTE_METRICS = ("mean_average_precision_at_r", "precision_at_1", *(f"recall_at_{k}" for k in RECALL_KS))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_query_is_reference(seed):
    x, y = make_data(CLASS_SIZES, dim=3, seed=seed)
    expected = brute_force(x, y, x, y, ref_includes_query=True)
    got = BenchAccuracyCalculator(include=BRUTE_METRICS).get_accuracy(x, y)
    for name in BRUTE_METRICS:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
    # the data must make the metrics informative: recall rises with k, not all 0 or 1
    recalls = [expected[f"recall_at_{k}"] for k in RECALL_KS]
    assert recalls == sorted(recalls) and 0 < recalls[0] < recalls[-1]
    assert got["precision_at_1"] == got["recall_at_1"]


def test_separate_query_and_reference():
    query, q_labels = make_data([3, 4, 2, 5, 3], dim=4, seed=10)
    reference, r_labels = make_data([4, 2, 6, 3, 1], dim=4, seed=11)
    q_labels = q_labels.copy()
    q_labels[:2] = 7  # a class absent from the reference: these queries are left out
    expected = brute_force(query, q_labels, reference, r_labels, ref_includes_query=False)
    got = BenchAccuracyCalculator(include=BRUTE_METRICS).get_accuracy(
        query, q_labels, reference, r_labels, ref_includes_query=False
    )
    for name in BRUTE_METRICS:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_reference_includes_query():
    query, q_labels = make_data(CLASS_SIZES, dim=3, seed=3)
    extra, e_labels = make_data([2, 1, 3, 2, 2, 1, 1, 3, 2], dim=3, seed=4)
    reference = np.concatenate([query, extra])
    r_labels = np.concatenate([q_labels, e_labels])
    expected = brute_force(query, q_labels, reference, r_labels, ref_includes_query=True)
    got = BenchAccuracyCalculator(include=BRUTE_METRICS).get_accuracy(
        query, q_labels, reference, r_labels, ref_includes_query=True
    )
    for name in BRUTE_METRICS:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


@pytest.mark.parametrize("k", [1, 3, "max_bin_count", None])
def test_recall_at_8_needs_no_large_k(k):
    """The neighbour count is raised to 8 whatever k the caller gave."""
    x, y = make_data(CLASS_SIZES, dim=3, seed=5)
    expected = brute_force(x, y, x, y, ref_includes_query=True)
    include = tuple(f"recall_at_{j}" for j in RECALL_KS)
    got = BenchAccuracyCalculator(include=include, k=k).get_accuracy(x, y)
    for name in include:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
    assert expected["recall_at_8"] > expected["recall_at_4"]


def test_recall_with_fewer_references_than_k():
    """With 5 references in all, Recall@8 looks at all 4 other items: 1 for every non-lone query."""
    x = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]], dtype=np.float32)
    y = np.array([0, 1, 1, 0, 2])
    calc = BenchAccuracyCalculator(include=("recall_at_1", "recall_at_2", "recall_at_8"))
    got = calc.get_accuracy(x, y)
    # queries 0,1,2,3 (label 2 is lone); nearest: 0->1 (miss), 1->0 (miss), 2->1 (hit), 3->2 (miss)
    assert got["recall_at_1"] == pytest.approx(1 / 4)
    # second nearest: 0->2 (miss), 1->2 (hit), 3->1 (miss)
    assert got["recall_at_2"] == pytest.approx(2 / 4)
    assert got["recall_at_8"] == pytest.approx(1.0)


def test_avg_of_avgs_and_per_class():
    x, y = make_data(CLASS_SIZES, dim=3, seed=6)
    order = neighbour_order(x, x, ref_includes_query=True)
    hits = {}
    for i, o in enumerate(order):
        if (y == y[i]).sum() > 1:
            hits.setdefault(y[i], []).append(float((y[o[:4]] == y[i]).any()))
    per_class = [np.mean(hits[c]) for c in sorted(hits)]
    got = BenchAccuracyCalculator(include=("recall_at_4",), avg_of_avgs=True).get_accuracy(x, y)
    assert got["recall_at_4"] == pytest.approx(np.mean(per_class), abs=1e-12)
    listed = BenchAccuracyCalculator(include=("recall_at_4",), return_per_class=True).get_accuracy(x, y)
    assert listed["recall_at_4"] == pytest.approx(per_class, abs=1e-12)


def test_defaults_labels_and_knn_requirement():
    calc = BenchAccuracyCalculator()
    assert set(calc.get_curr_metrics()) == set(DEFAULT_METRICS)
    assert set(DEFAULT_METRICS) == {
        "mean_average_precision_at_r",
        "r_precision",
        "precision_at_1",
        "recall_at_1",
        "recall_at_2",
        "recall_at_4",
        "recall_at_8",
        "NMI",
    }
    assert all(f"recall_at_{k}" in calc.requires_knn() for k in RECALL_KS)
    assert list(METRIC_LABELS)[: len(DEFAULT_METRICS)] == list(DEFAULT_METRICS)
    assert [METRIC_LABELS[f"recall_at_{k}"] for k in RECALL_KS] == ["R@1", "R@2", "R@4", "R@8"]
    assert METRIC_LABELS["mean_average_precision_at_r"] == "MAP@R"
    x, y = make_data([8] * 6, dim=4, seed=7, spread=4.0)
    got = calc.get_accuracy(x, y)
    assert set(got) == set(DEFAULT_METRICS)
    assert 0.0 <= got["NMI"] <= 1.0


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="Primary metrics"):
        BenchAccuracyCalculator(include=("recall_at_3",))
