"""The evidence-study driver (``python -m experiments.evidence``) at its tiny size: the search runs
only on validation, the final runs test once with the chosen settings, and the report holds the
search, its budget, the paired test table and the command that made it; and the scripts that read
finished experiments."""

import json
import math
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from experiments import dvml_samples, evidence, flow_volume
from experiments import evidence_summary as summary
from experiments import skewed_mean_sweep as sweep
from pml_regularizers.bench import read_report_data

pytestmark = pytest.mark.slow


def tiny_args(out, docs, tmp_path, embedding_size):
    """The options every tiny run here shares: its folders, the shared data cache, the size."""
    return [
        "--size", "tiny", "--out", str(out), "--docs", str(docs),
        "--cache", str(tmp_path / "cache"), "--embedding-size", str(embedding_size),
    ]  # fmt: skip


def splits_of(exp_dir):
    return {r["split"] for r in json.loads((exp_dir / "results.json").read_text())["records"]}


def test_every_study_composes_valid_configs():
    from pml_regularizers.bench import load_spec

    for name, study in evidence.STUDIES.items():
        method = [*study.base, *study.method]
        for overrides in (study.base, *study.extra.values(), *([*method, *point] for point in study.method_grid)):
            spec = load_spec(list(overrides))
            config = OmegaConf.create(spec.config)
            expected = dict(o.split("=", 1) for o in overrides)  # a later override of a key wins
            for key, value in expected.items():
                got = spec.choices[key] if key in spec.choices else OmegaConf.select(config, key)
                assert str(got) == value, (name, key)


def test_tiny_study_searches_on_validation_and_tests_the_chosen_configs(tmp_path, capsys):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = ["skewed_mean_proxy_anchor", *tiny_args(out, docs, tmp_path, 8)]
    assert evidence.main(argv) == 0
    tag = "skewed_mean_proxy_anchor-glyphs-n6-d8"
    searches = sorted(p for p in out.iterdir() if "-search" in p.name)
    assert len(searches) == len(evidence.LR_GRID) + len(evidence.STUDIES["skewed_mean_proxy_anchor"].method_grid)
    for exp_dir in searches:
        assert splits_of(exp_dir) == {"val"}  # the search never embeds the test classes
        assert not (exp_dir / "seed_100" / "test_embeddings.pt").exists()
    scores = {p.name: evidence.val_score(p) for p in searches}
    lrs = [point.split("=")[1] for point in evidence.LR_GRID]
    best_lr = max(lrs, key=lambda lr: scores[f"{tag}-baseline-search-lr{lr}"])
    method_cfg = (out / f"{tag}-method" / "config.yaml").read_text()
    assert f"lr: {best_lr}" in method_cfg
    for role in ("baseline", "method"):
        assert splits_of(out / f"{tag}-{role}") == {"val", "test"}
    report = (docs / tag / "report.md").read_text()
    assert "python -m experiments.evidence skewed_mean_proxy_anchor --size tiny" in report
    assert "## Hyperparameter search (validation only)" in report
    assert report.count("| baseline | `optimizer.lr=") == 3
    assert report.count("| method | `regularizer.weight=") == 3
    assert f"Δ: difference to `{tag}-baseline`" in report
    assert (docs / tag / "metrics.png").exists()
    assert "## Over training (final runs)" in report
    for column in ("mean_average_precision_at_r_level0", "skewed_mean"):
        assert f"![{column} over training](curve_{column}.png)" in report
        assert (docs / tag / f"curve_{column}.png").stat().st_size > 0


def test_parallel_jobs_give_the_sequential_results(tmp_path):
    """--jobs runs the same experiments in worker processes: same folders, same metrics, same report
    tables; a study with an extra comparator covers the searches that run side by side."""
    reports = {}
    for jobs in (1, 3):
        out, docs = tmp_path / f"runs{jobs}", tmp_path / f"docs{jobs}"
        argv = ["jacobian_determinant_proxy_anchor", *tiny_args(out, docs, tmp_path, 4), "--jobs", str(jobs)]
        assert evidence.main(argv) == 0
        reports[jobs] = {p.name: json.loads((p / "results.json").read_text())["records"] for p in sorted(out.iterdir())}
        (report_dir,) = docs.iterdir()
        text = (report_dir / "report.md").read_text()
        reports[jobs]["tables"] = text[text.index("Test split.") : text.index("## Over training")]
    assert len(reports[1]) == 2 * 3 + 3 + 3 + 1  # lr searches of baseline and linear, the method's, 3 finals, tables
    assert reports[3] == reports[1]
    with pytest.raises(SystemExit):
        evidence.main(["skewed_mean_proxy_anchor", "--size", "tiny", "--jobs", "0"])
    with pytest.raises(ValueError, match="jobs must be >= 1, got 0"):
        evidence.run_all([], tmp_path, None, jobs=0)


def test_per_class_sets_the_glyph_option_and_names_the_data():
    import argparse

    parser = argparse.ArgumentParser()
    evidence.add_run_arguments(parser)
    overrides = evidence.dataset_overrides(parser.parse_args(["--per-class", "10"]))
    assert overrides == ["dataset=glyphs", "dataset.options.per_class=10"]
    assert evidence.dataset_name(overrides) == "glyphs-n10"
    assert evidence.dataset_name(["dataset=glyphs", "dataset.options.per_class=6", *overrides]) == "glyphs-n10"
    assert evidence.dataset_name(["dataset=omniglot", "dataset.root=x"]) == "omniglot"
    with pytest.raises(SystemExit, match="--per-class applies to --dataset glyphs only"):
        evidence.dataset_overrides(parser.parse_args(["--dataset", "omniglot", "--per-class", "10"]))
    with pytest.raises(SystemExit, match="--per-class must be at least 2"):
        evidence.dataset_overrides(parser.parse_args(["--per-class", "1"]))


def test_summary_quotes_each_studys_own_report(tmp_path):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    with pytest.raises(FileNotFoundError, match="no evidence study report"):
        summary.write_summary(docs, "python -m experiments.evidence_summary")
    argv = ["jacobian_determinant_proxy_anchor", *tiny_args(out, docs, tmp_path, 8)]
    assert evidence.main(argv) == 0
    tag = "jacobian_determinant_proxy_anchor-glyphs-n6-d8"
    study_report = (docs / tag / "report.md").read_text()
    numbers = read_report_data(docs / tag)
    shutil.rmtree(out)  # the published reports are all it reads
    (docs / "skewed_mean_sweep-glyphs-n6-d8").mkdir()  # not a study: left out, its report.json unread
    (docs / "skewed_mean_sweep-glyphs-n6-d8" / "report.json").write_text("{}")
    text = summary.write_summary(docs, "python -m experiments.evidence_summary")
    assert text == (docs / "evidence_summary" / "report.md").read_text()
    assert "python -m experiments.evidence jacobian_determinant_proxy_anchor --size tiny" in text
    assert numbers.command.startswith("python -m experiments.evidence jacobian_determinant_proxy_anchor")
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| jacobian_determinant_proxy_anchor")]
    assert [r[3] for r in rows] == ["method", "linear"]
    for row in rows:
        # the study's report has the same separated MAP@R and paired difference in its table
        table_row = next(
            line for line in study_report.splitlines() if line.startswith(f"| {tag}-{row[3]} | separated |")
        )
        assert f"{row[5]} (Δ {row[6]})" in table_row
        # and its verdict is where the full-precision interval of report.json lies
        (sep,) = [
            r
            for r in numbers.rows
            if (r.experiment, r.embedding, r.metric) == (f"{tag}-{row[3]}", "separated", "mean_average_precision_at_r")
        ]
        low, high = sep.diff_mean - sep.diff_half_width, sep.diff_mean + sep.diff_half_width
        assert row[8].rstrip(" |") == ("higher" if low > 0 else "lower" if high < 0 else "no measurable difference")
    # it reads report.json alone, and leaves out a comparator missing from it
    data = json.loads((docs / tag / "report.json").read_text())
    data["rows"] = [r for r in data["rows"] if r["experiment"] != f"{tag}-linear"]
    (docs / tag / "report.json").write_text(json.dumps(data))
    (docs / tag / "report.md").unlink()
    text = summary.write_summary(docs, "python -m experiments.evidence_summary")
    assert [line.split(" | ")[3] for line in text.splitlines() if line.startswith("| jacobian")] == ["method"]


@pytest.mark.parametrize("lam", [0.5, 4.0, 16.0])
def test_sweep_proxy_geometry_matches_a_loop_over_pairs(lam):
    proxies = torch.randn(9, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    unit = proxies / proxies.norm(dim=1, keepdim=True)
    sims = [float(unit[i] @ unit[j]) for i in range(9) for j in range(i + 1, 9)]
    largest, mean, skewed = sweep.proxy_geometry(proxies, lam)
    assert largest == pytest.approx(max(sims), rel=1e-6)
    assert mean == pytest.approx(sum(sims) / len(sims), rel=1e-6, abs=1e-9)
    assert skewed == pytest.approx(math.log(sum(math.exp(lam * s) for s in sims) / len(sims)) / lam, rel=1e-6)


@pytest.mark.parametrize(
    ("loss", "tag"),
    [
        ("proxy_anchor", "skewed_mean_sweep-glyphs-n6-d8"),
        ("normalized_softmax", "skewed_mean_sweep_normalized_softmax-glyphs-n6-d8"),
    ],
)
def test_tiny_sweep_runs_every_weight_on_validation_only(tmp_path, loss, tag):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = [*tiny_args(out, docs, tmp_path, 8), "--loss", loss]
    assert sweep.main(argv) == 0
    runs = sorted(out.iterdir())
    assert len(runs) == len(sweep.WEIGHTS)
    for exp_dir in runs:
        assert splits_of(exp_dir) == {"val"}
    report = (docs / tag / "report.md").read_text()
    assert "python -m experiments.skewed_mean_sweep --size tiny" in report
    assert f"loss={loss}" in report
    assert report.count("pml-bench run ") == len(sweep.WEIGHTS)
    for w in sweep.WEIGHTS:
        assert f"\n| {w:g} | " in report
    assert "| random Gaussian 4×8 |" in report  # 4 training classes per fold, one center each
    assert (docs / tag / "sweep.png").stat().st_size > 0


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
