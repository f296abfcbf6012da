"""The class centers' geometry: its formulas against loops over the pairs, the losses it reads,
its file kept through resumed runs, and what the runner records for losses with and without
class centers."""

import json
import math

import pytest
import torch
from pytorch_metric_learning import losses, regularizers

from pml_regularizers.bench import ExperimentFolder, load_spec, read_checkpoint, run_experiment
from pml_regularizers.bench.results.center_geometry import (
    GEOMETRY_KEYS,
    append_geometry,
    center_geometry,
    class_centers,
    read_geometry,
)

from .test_runner import tiny


def loop_geometry(centers):
    """The geometry by plain Python loops over the centers, in float64."""
    rows = [[float(v) for v in row] for row in centers]
    norms = [math.sqrt(sum(v * v for v in row)) for row in rows]
    n = len(rows)
    cos = [[sum(a * b for a, b in zip(rows[i], rows[j])) / (norms[i] * norms[j]) for j in range(n)] for i in range(n)]
    pairs = [cos[i][j] for i in range(n) for j in range(n) if i != j]
    nearest = [max(cos[i][j] for j in range(n) if j != i) for i in range(n)]
    mean_norm = sum(norms) / n
    std_norm = math.sqrt(sum((x - mean_norm) ** 2 for x in norms) / n)
    return {
        "mean_cosine": sum(pairs) / len(pairs),
        "max_cosine": max(pairs),
        "nearest_cosine": sum(nearest) / n,
        "norm_cv": std_norm / mean_norm,
    }


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3), (7, 4), (30, 2)])
def test_geometry_matches_loops(dtype, shape):
    centers = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))).to(dtype)
    got, want = center_geometry(centers), loop_geometry(centers)
    assert set(got) == set(GEOMETRY_KEYS)
    for key in GEOMETRY_KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-12)


def test_geometry_of_known_configurations():
    simplex = torch.tensor([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]], dtype=torch.float64)
    got = center_geometry(3.0 * simplex)
    assert got["mean_cosine"] == pytest.approx(-0.5)
    assert got["max_cosine"] == pytest.approx(-0.5)
    assert got["norm_cv"] == pytest.approx(0.0, abs=1e-12)
    collapsed = center_geometry(torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert collapsed["max_cosine"] == pytest.approx(1.0)
    assert collapsed["norm_cv"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "centers, message",
    [
        (torch.ones(1, 3), "C >= 2"),
        (torch.ones(3), "C >= 2"),
        (torch.ones(2, 2, 2), "C >= 2"),
        (torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "non-zero"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "finite"),
    ],
)
def test_geometry_refuses_undefined_directions(centers, message):
    with pytest.raises(ValueError, match=message):
        center_geometry(centers)


def test_class_centers_of_pml_losses():
    proxy = losses.ProxyAnchorLoss(num_classes=5, embedding_size=3)
    assert torch.equal(class_centers(proxy), proxy.proxies.detach())
    softmax = losses.NormalizedSoftmaxLoss(num_classes=5, embedding_size=3)
    assert softmax.W.shape == (3, 5)
    assert torch.equal(class_centers(softmax), softmax.W.detach().t())
    assert class_centers(losses.MultiSimilarityLoss()) is None
    assert class_centers(torch.nn.Linear(3, 2)) is None
    regularized = losses.ProxyAnchorLoss(5, 3, weight_regularizer=regularizers.RegularFaceRegularizer())
    assert class_centers(regularized).shape == (5, 3)


def test_append_replaces_the_epochs_a_resumed_run_repeats(tmp_path):
    path = tmp_path / "center_geometry.json"
    assert read_geometry(path) == []
    steps = [torch.randn(4, 3, generator=torch.Generator().manual_seed(s)) for s in range(5)]
    for epoch in range(4):
        append_geometry(path, epoch, steps[epoch])
    append_geometry(path, 2, steps[4])  # resumed from the checkpoint of epoch 1
    entries = read_geometry(path)
    assert [e["epoch"] for e in entries] == [0, 1, 2]
    assert entries[2]["max_cosine"] == pytest.approx(center_geometry(steps[4])["max_cosine"])
    assert entries[1]["max_cosine"] == pytest.approx(center_geometry(steps[1])["max_cosine"])


@pytest.mark.parametrize("content", ['{"epoch": 1}', '[{"mean_cosine": 0.1}]', "[1, 2]"])
def test_read_refuses_a_file_of_another_shape(tmp_path, content):
    path = tmp_path / "center_geometry.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="center-geometry entries"):
        read_geometry(path)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["proxy_anchor", "normalized_softmax"])
def test_runner_records_the_geometry_of_every_epoch(tmp_path, loss):
    exp_dir = run_experiment(load_spec(tiny(tmp_path, f"loss={loss}", "regularizer=regular_face", "seeds=1")))
    (fold,) = ExperimentFolder(exp_dir).folds()
    entries = read_geometry(fold.center_geometry)
    assert [e["epoch"] for e in entries] == [0, 1, 2]
    weights = next(v for k, v in read_checkpoint(fold.latest)["loss"].items() if k in ("proxies", "W"))
    centers = weights if loss == "proxy_anchor" else weights.t()
    assert centers.shape[0] == 8  # the training half's classes
    for key in GEOMETRY_KEYS:
        assert entries[-1][key] == pytest.approx(center_geometry(centers)[key])
    assert entries[0] != entries[-1]  # the centers moved


@pytest.mark.slow
def test_runner_records_no_geometry_without_class_centers(tmp_path):
    exp_dir = run_experiment(
        load_spec(tiny(tmp_path, "loss=multi_similarity", "miner=multi_similarity", "seeds=1", "epochs=1"))
    )
    (fold,) = ExperimentFolder(exp_dir).folds()
    assert not fold.center_geometry.exists()
    assert json.loads((exp_dir / "results.json").read_text())["records"]
