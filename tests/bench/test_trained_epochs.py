"""How long each run trained (``results.trained_epochs``): the epochs and the tested epoch of every
seed's folds against what PML's tester logged after each epoch, and the runs at the epoch cap."""

import csv
from pathlib import Path

import pytest

from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.results.trained_epochs import trained_epochs, trained_epochs_section
from pml_regularizers.bench.results.training_logs import VAL_LOG, VAL_MAP_AT_R

from .test_runner import tiny

pytestmark = pytest.mark.slow


def logged(fold_dir: Path) -> list[float]:
    """Validation MAP@R after each epoch, as the tester's CSV has it."""
    (path,) = (fold_dir / "logs").glob(VAL_LOG)
    with path.open() as f:
        return [float(row[VAL_MAP_AT_R]) for row in csv.DictReader(f)]


def test_epochs_and_tested_epochs_follow_the_validation_log(tmp_path):
    args = ["seeds=2", "cv_folds=2", "epochs=6", "patience=1", "optimizer.lr=0.05", "test=false"]
    assert cli_main(["run", *tiny(tmp_path, *args)]) == 0
    (exp_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "results.json").exists()]
    runs = trained_epochs(exp_dir)
    assert [(r.seed, r.fold) for r in runs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for run in runs:
        curve = logged(exp_dir / f"seed_{run.seed}" / f"fold_{run.fold}")
        assert run.epochs == len(curve) and run.cap == 6
        assert run.tested_epoch == curve.index(max(curve)) + 1  # the first best epoch
        assert run.at_cap == (len(curve) == 6)
    assert any(not r.at_cap for r in runs)  # patience 1 at a high rate stops some runs early
    lines = trained_epochs_section([exp_dir], tmp_path / "report")
    row = next(line for line in lines if line.startswith(f"| {exp_dir.name} |"))
    capped = sum(r.at_cap for r in runs)
    assert row.endswith(f"| {capped} of 4 (cap 6) |")
    assert (tmp_path / "report" / "trained_epochs.json").exists()


def test_a_run_without_early_stopping_ends_at_the_cap(tmp_path):
    assert cli_main(["run", *tiny(tmp_path, "seeds=1", "epochs=2")]) == 0
    (exp_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "results.json").exists()]
    (run,) = trained_epochs(exp_dir)
    assert (run.epochs, run.tested_epoch, run.at_cap) == (2, 2, True)
