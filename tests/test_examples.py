"""Every example, ``examples/[0-9][0-9]_*.py``, found by glob: it starts with a comment that says
what it shows and how to run it, and it runs at ``--size tiny`` in a fresh folder.

An example whose header names ``torchrun`` is started with ``torch.distributed.run --standalone
--nproc_per_node=2``, the module behind ``torchrun``; every other example with this interpreter.
The docs build lists the examples from the same headers (``docs/conf.py``).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180


def _load_docs_conf():
    spec = importlib.util.spec_from_file_location("docs_conf", ROOT / "docs" / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOCS_CONF = _load_docs_conf()
EXAMPLES = DOCS_CONF.example_files()
IDS = [path.name for path in EXAMPLES]


def _command(path: Path) -> list[str]:
    if "torchrun" in DOCS_CONF.example_header(path):
        torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        return [sys.executable, *torchrun, str(path), "--size", "tiny"]
    return [sys.executable, str(path), "--size", "tiny"]


def _check_plain_loop(stdout: str, folder: Path) -> None:
    assert "| ProxyAnchor  " in stdout
    assert "ProxyAnchor + SkewedMean" in stdout
    assert "paired difference" in stdout


def _check_flow_trainer(stdout: str, folder: Path) -> None:
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:5]
        for line in stdout.splitlines()
        if line.startswith("| with") or line.startswith("| without")
    }
    without = rows["without regularizer"]
    regularized = rows["with JacobianDeterminantRegularizer (square, weight 0.1)"]
    for p_at_1, map_at_r, _ in (without, regularized):
        assert 0 < float(p_at_1) <= 1 and 0 < float(map_at_r) <= 1
    # the square penalty pulls the log-determinant towards its target, 0
    assert abs(float(regularized[2])) < abs(float(without[2]))
    assert "log-det stats logged by record-keeper" in stdout and "logdet_mean" in stdout


def _check_dvml(stdout: str, folder: Path) -> None:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "phase"])
    assert lines[header].split()[2:] == ["kl_loss", "reconstruction_loss", "synthetic_metric_loss", "metric_loss"]
    epochs = [line.split() for line in lines[header + 1 : header + 3]]
    assert [e[:2] for e in epochs] == [["1", "1"], ["2", "2"]]  # tiny: phase 2 from epoch 2
    assert epochs[0][7] == "(x0.1)" and epochs[1][7] == "(x0.2)"  # the synthetic loss's weight
    final = lines[-1]
    assert final.startswith("test classes") and "embedding z_I" in final
    p_at_1, map_at_r = float(final.split("Precision@1 ")[1].split(",")[0]), float(final.split("MAP@R ")[1])
    assert 0 < p_at_1 <= 1 and 0 < map_at_r <= 1


def _check_benchmark_runner(stdout: str, folder: Path) -> None:
    out_dir = folder / "runs" / "examples" / "04_tiny"  # the default --output-dir
    base, method = "glyphs-proxy_anchor-linear", "glyphs-proxy_anchor-skewed_mean-linear"
    for name in (base, method):
        assert (out_dir / name / "results.json").is_file()
        assert (out_dir / name / "seed_1").is_dir()  # the tiny size runs two seeds
    report = (out_dir / "comparison" / "report.md").read_text()
    assert f"difference to `{base}` paired by seed" in report
    assert f"| {method} | single | 2 |" in report
    assert (out_dir / "comparison" / "metrics.png").is_file()
    assert report.strip() in stdout


# What some examples promise to print or write, checked after their tiny run.
OUTPUT_CHECKS = {
    "01_plain_loop.py": _check_plain_loop,
    "02_flow_trainer.py": _check_flow_trainer,
    "03_dvml.py": _check_dvml,
    "04_benchmark_runner.py": _check_benchmark_runner,
}


def test_the_numbered_examples_are_found():
    names = [path.name for path in EXAMPLES]
    assert set(OUTPUT_CHECKS) <= set(names)
    assert len(set(name[:2] for name in names)) == len(names), f"two examples share a number: {names}"


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_example_starts_with_what_it_shows_and_how_to_run_it(path):
    header = DOCS_CONF.example_header(path)
    first_paragraph = header.split("\n\n")[0]
    assert len(first_paragraph.split()) >= 8, f"{path.name}: the header must open with what it shows"
    commands = DOCS_CONF.example_run_lines(path, header)
    assert any(f"examples/{path.name}" in line for line in commands), (
        f"{path.name}: the header must give the command that runs it, naming examples/{path.name}"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
@pytest.mark.slow
def test_example_runs_at_tiny_size(path, tmp_path):
    result = subprocess.run(_command(path), cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, (
        f"{path.name} --size tiny failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    assert result.stdout.strip(), f"{path.name} printed nothing"
    if path.name in OUTPUT_CHECKS:
        OUTPUT_CHECKS[path.name](result.stdout, tmp_path)
