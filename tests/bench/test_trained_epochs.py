"""How long each run trained (``results.trained_epochs``): the epochs and the tested epoch of every
seed's folds against what PML's tester logged after each epoch, and the runs at the epoch cap."""

import csv
from pathlib import Path

import pytest
import torch

from pml_regularizers.bench import load_spec, run_experiment
from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.results.trained_epochs import trained_epochs, trained_epochs_section
from pml_regularizers.bench.results.training_logs import VAL_LOG, VAL_MAP_AT_R

from .test_runner import tiny
from .test_runner_faults import interrupted_run

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
    assert all(r.cpu_seconds is not None and r.cpu_seconds > 0 for r in runs)
    minutes = sum(r.cpu_seconds for r in runs if r.cpu_seconds is not None) / 60
    assert row.endswith(f"| {capped} of 4 (cap 6) | {minutes:.1f} min |")
    assert (tmp_path / "report" / "trained_epochs.json").exists()


def test_a_run_without_early_stopping_ends_at_the_cap(tmp_path):
    assert cli_main(["run", *tiny(tmp_path, "seeds=1", "epochs=2")]) == 0
    (exp_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "results.json").exists()]
    (run,) = trained_epochs(exp_dir)
    assert (run.epochs, run.tested_epoch, run.at_cap) == (2, 2, True)


def test_training_cpu_adds_up_over_the_processes_that_trained_a_run(tmp_path, monkeypatch):
    """A run stopped after 2 of 3 epochs, its checkpoint marked as if its process had spent 1000 CPU
    seconds, resumes: the finished run's CPU is those 1000 s plus what the third epoch took."""
    exp_dir = interrupted_run(tmp_path, monkeypatch, 2, "experiment=resumed")
    latest = exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt"
    payload = torch.load(latest, weights_only=True)
    assert payload["state"]["epoch"] == 2 and 0 < payload["state"]["cpu_seconds"] < 1000
    payload["state"]["cpu_seconds"] = 1000.0
    torch.save(payload, latest)
    run_experiment(load_spec(tiny(tmp_path, "seeds=1", "epochs=3", "experiment=resumed")))
    (run,) = trained_epochs(exp_dir)
    assert run.epochs == 3 and run.cpu_seconds is not None and 1000 < run.cpu_seconds < 1100


def test_a_checkpoint_saved_before_cpu_was_recorded_has_none(tmp_path):
    assert cli_main(["run", *tiny(tmp_path, "seeds=1", "epochs=1")]) == 0
    (exp_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "results.json").exists()]
    latest = exp_dir / "seed_0" / "fold_0" / "checkpoint_latest.pt"
    payload = torch.load(latest, weights_only=True)
    del payload["state"]["cpu_seconds"], payload["state"]["wall_seconds"]
    torch.save(payload, latest)
    (run,) = trained_epochs(exp_dir)
    assert run.cpu_seconds is None
    row = next(line for line in trained_epochs_section([exp_dir], tmp_path / "report") if line.startswith("| glyphs"))
    assert row.endswith("| 1 of 1 (cap 1) | – |")
