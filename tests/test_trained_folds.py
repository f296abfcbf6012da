"""The scripts that measure finished experiments (``python -m experiments.dvml_samples`` and
``experiments.flow_volume``): their figures against loops and per-row Jacobians, and what they read
and refuse."""

import json

import pytest
import torch

from experiments import dvml_samples, flow_volume


def test_dvml_sample_geometry_matches_loops():
    from pml_regularizers import DVMLEmbedder

    torch.manual_seed(0)
    embedder = DVMLEmbedder(6, 4)
    features = torch.randn(12, 6)
    labels = torch.arange(12) % 3
    got = dvml_samples.sample_geometry(features, labels, embedder, torch.Generator().manual_seed(7))

    t = dvml_samples.DRAWS
    noise = torch.randn(12, t, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z, mu, logvar = embedder.heads(features).chunk(3, dim=1)
    sigma = torch.exp(0.5 * logvar)
    unit = [v / v.norm() for v in z]
    centers = {}
    for c in range(3):
        mean = sum(unit[i] for i in range(12) if labels[i] == c) / 4
        centers[c] = mean / mean.norm()

    def nearest(v):
        return max(range(3), key=lambda c: float(v / v.norm() @ centers[c]))

    variation, cosines, synthetic_hits = [], [], 0
    for i in range(12):
        for k in range(t):
            extra = mu[i] + sigma[i] * noise[i, k]
            sample = z[i] + extra
            variation.append(float(extra.norm()))
            cosines.append(float(sample @ z[i] / (sample.norm() * z[i].norm())))
            synthetic_hits += nearest(sample) == labels[i]
    z_norm = sum(float(v.norm()) for v in z) / 12
    assert got["z_I norm"] == pytest.approx(z_norm, rel=1e-5)
    assert got["variation norm"] == pytest.approx(sum(variation) / len(variation), rel=1e-5)
    assert got["variation / z_I"] == pytest.approx(sum(variation) / len(variation) / z_norm, rel=1e-5)
    assert got["mu norm"] == pytest.approx(sum(float(m.norm()) for m in mu) / 12, rel=1e-5)
    assert got["sigma (mean)"] == pytest.approx(float(sigma.mean()), rel=1e-5)
    assert got["cos(sample, z_I)"] == pytest.approx(sum(cosines) / len(cosines), rel=1e-5)
    assert got["center accuracy, real"] == pytest.approx(sum(nearest(z[i]) == labels[i] for i in range(12)) / 12)
    assert got["center accuracy, synthetic"] == pytest.approx(synthetic_hits / (12 * t))


@pytest.mark.slow
def test_dvml_samples_reads_a_finished_dvml_run_and_refuses_others(tmp_path):
    from pml_regularizers.bench.cli import main as cli_main

    from .bench.test_runner import tiny

    assert cli_main(["run", *tiny(tmp_path, "embedder=dvml", "trainer=dvml", "seeds=1", "cv_folds=2", "epochs=1")]) == 0
    (exp_dir,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "report"
    assert dvml_samples.main([str(exp_dir), "--out", str(out), "--title", "Tiny DVML check"]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# Tiny DVML check\n")
    val = json.loads((exp_dir / "results.json").read_text())["records"][0]
    assert val["split"] == "val"
    score = val["metrics"]["mean_average_precision_at_r"]
    assert f"| `{exp_dir.name}` | {score:.4f} | 2 | " in report  # one row: its validation score, both folds
    assert report.count("pml-bench run ") == 1
    assert f"python -m experiments.dvml_samples {exp_dir}" in report

    assert_refuses_a_linear_run(dvml_samples.experiment_geometry, exp_dir, tmp_path, "dvml", "not a DVML experiment")


def assert_refuses_a_linear_run(figures, exp_dir, tmp_path, embedder, match):
    """``figures`` of a copy of ``exp_dir``'s config with ``embedder=linear`` raises, matching ``match``."""
    plain = tmp_path / "plain"
    plain.mkdir()
    config = (exp_dir / "config.yaml").read_text()
    assert f"embedder: {embedder}" in config
    (plain / "config.yaml").write_text(config.replace(f"embedder: {embedder}", "embedder: linear"))
    with pytest.raises(ValueError, match=match):
        figures(plain)


def test_flow_volume_matches_per_row_jacobians():
    import numpy as np

    from pml_regularizers import FlowEmbedder

    torch.manual_seed(0)
    flow = FlowEmbedder(7, 4, num_blocks=3, hidden_features=16)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.5)  # far from the identity it starts as
    features = torch.randn(9, 7)
    got = flow_volume.volume_change(flow, features)

    reference = FlowEmbedder(7, 4, num_blocks=3, hidden_features=16).double()
    reference.load_state_dict(flow.state_dict())
    logdets, largest, smallest, ratios = [], [], [], []
    for x in features.double():
        with torch.no_grad():
            h = reference.projection(x)
            z = reference(x.unsqueeze(0))[0]
        jac = torch.autograd.functional.jacobian(reference.transform(), h).numpy()
        logdets.append(np.linalg.slogdet(jac)[1])
        singular = np.linalg.svd(jac, compute_uv=False)
        largest.append(singular.max())
        smallest.append(singular.min())
        ratios.append(float(z.norm() / h.norm()))
    logdets = np.array(logdets)
    assert np.abs(logdets).max() > 0.5 and max(largest) > 1.5  # a map that changes volume and shape
    assert got["log-det mean"] == pytest.approx(logdets.mean(), rel=1e-4)
    assert got["log-det std"] == pytest.approx(logdets.std(ddof=1), rel=1e-4)
    assert got["log-det min"] == pytest.approx(logdets.min(), rel=1e-4)
    assert got["log-det max"] == pytest.approx(logdets.max(), rel=1e-4)
    assert got["singular-value geometric mean"] == pytest.approx(np.exp(logdets / 4).mean(), rel=1e-4)
    assert got["largest singular value"] == pytest.approx(np.mean(largest), rel=1e-4)
    assert got["smallest singular value"] == pytest.approx(np.mean(smallest), rel=1e-4)
    assert got["norm ratio"] == pytest.approx(np.mean(ratios), rel=1e-4)


def test_flow_volume_of_a_new_flow_is_the_identity():
    from pml_regularizers import FlowEmbedder

    got = flow_volume.volume_change(FlowEmbedder(5, 5, hidden_features=8), torch.randn(300, 5))  # > one chunk
    assert got["log-det mean"] == got["log-det min"] == got["log-det max"] == got["log-det std"] == 0.0
    for name in ("singular-value geometric mean", "largest singular value", "smallest singular value", "norm ratio"):
        assert got[name] == pytest.approx(1.0, abs=1e-6), name
    with pytest.raises(TypeError, match="flow must be a FlowEmbedder, got Linear"):
        flow_volume.volume_change(torch.nn.Linear(5, 5), torch.randn(3, 5))


@pytest.mark.slow
def test_flow_volume_reads_a_finished_flow_run_and_refuses_others(tmp_path):
    from pml_regularizers.bench.cli import main as cli_main

    from .bench.test_runner import tiny

    assert cli_main(["run", *tiny(tmp_path, "embedder=flow", "seeds=1", "cv_folds=2", "epochs=1")]) == 0
    (exp_dir,) = (tmp_path / "runs").iterdir()
    out = tmp_path / "report"
    assert flow_volume.main([str(exp_dir), "--out", str(out), "--title", "Tiny flow check"]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# Tiny flow check\n")
    score = json.loads((exp_dir / "results.json").read_text())["records"][0]["metrics"]["mean_average_precision_at_r"]
    (row,) = [line for line in report.splitlines() if line.startswith(f"| `{exp_dir.name}` |")]
    cells = row.strip("|").split("|")
    assert cells[1].strip() == f"{score:.4f}" and cells[2].strip() == "2"  # its validation score, both folds
    assert len(cells) == 3 + 8 and float(cells[3].split("±")[0]) != 0.0  # trained: no longer the identity
    assert report.count("pml-bench run ") == 1
    assert f"python -m experiments.flow_volume {exp_dir}" in report

    assert_refuses_a_linear_run(flow_volume.experiment_volume, exp_dir, tmp_path, "flow", "not a flow experiment")


@pytest.mark.slow
def test_flow_volume_reads_a_run_without_cross_validation(tmp_path):
    from pml_regularizers.bench.cli import main as cli_main

    from .bench.test_runner import tiny

    assert cli_main(["run", *tiny(tmp_path, "embedder=flow", "epochs=1")]) == 0  # cv_folds=0: one fold a seed
    (exp_dir,) = (tmp_path / "runs").iterdir()
    assert not list(exp_dir.glob("seed_*/fold_*/checkpoint_best.pt"))
    values, count = flow_volume.experiment_volume(exp_dir)
    assert count == 2 and len(values["log-det mean"]) == 2  # the last epoch's models of both seeds
    out = tmp_path / "report"
    assert flow_volume.main([str(exp_dir), "--out", str(out)]) == 0
    assert f"| `{exp_dir.name}` | – | 2 | " in (out / "report.md").read_text()  # no validation score
