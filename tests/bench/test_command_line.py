"""``pml-bench run|evaluate`` on Hydra's own command line: typos refused naming the closest key (with
or without ``+``, in a group too, and against the classes of ``_target_`` groups) before torch is
imported and before anything is written; ``--help``, ``--cfg`` and ``--multirun`` as Hydra gives
them; one progress line per epoch and no stray warnings or progress bars."""

import io
import subprocess
import sys
from pathlib import Path

import pytest

from pml_regularizers.bench.app import split_arguments, sweep_jobs
from pml_regularizers.bench.cli import main as cli_main

from .test_runner import tiny

REPO = Path(__file__).resolve().parents[2]


def run_cli(*argv, cwd=REPO):
    """``pml-bench`` in a fresh process: (status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "pml_regularizers.bench", *argv], cwd=cwd, capture_output=True, text=True
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["epoch=1"], "unknown key epoch (did you mean epochs?)"),
        (["+epoch=1", "+patiense=3"], "unknown key epoch (did you mean epochs?)"),
        (["patiense=3"], "unknown key patiense (did you mean patience?)"),
        (["dataset.sise=16"], "unknown key dataset.sise (did you mean dataset.size?)"),
        (["+dataset.sise=16"], "unknown key dataset.sise (did you mean dataset.size?)"),
        (["loss.marginn=0.2"], "unknown key loss.marginn (did you mean loss.margin?)"),
        (
            ["+loss.marginn=0.2"],
            "loss.marginn: ProxyAnchorLoss (loss=proxy_anchor) takes no argument 'marginn' (did you mean loss.margin?)",
        ),
        (["+embedder.in_features=3"], "embedder.in_features is set by the runner (embedder=linear)"),
        (["loss.reducer=x"], "unknown key loss.reducer; the config has no such key (a new one, such as an argument"),
        (["seeds=abc"], "seeds must be an int >= 1, got 'abc'"),
    ],
)
def test_typos_are_refused_naming_the_closest_key_before_anything_is_written(tmp_path, capsys, overrides, expected):
    status = cli_main(["run", *tiny(tmp_path), *overrides])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("pml-bench: error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_typo_is_reported_before_torch_is_imported(tmp_path):
    code = (
        "import sys; from pml_regularizers.bench.cli import main; "
        f"status = main(['run', 'output_dir={tmp_path}', '+epoch=1']); "
        "print('torch' in sys.modules); sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "did you mean epochs?" in done.stderr
    assert done.stdout.strip() == "False"


def test_help_lists_the_groups_and_their_choices(capsys):
    assert cli_main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "== Config groups (group=option) ==" in out
    assert "regularizer: center_invariant, jacobian_determinant, jacobian_determinant_loss, none" in out
    assert "preset: dvml, dvml_cars196, dvml_cub, dvml_sop, reality_check" in out
    assert "seeds: 3" in out  # the config, with its keys


def test_cfg_prints_the_config_and_its_folder_without_training(tmp_path, capsys):
    assert cli_main(["run", "--cfg", "job", "--resolve", *tiny(tmp_path), "regularizer=skewed_mean"]) == 0
    out = capsys.readouterr().out
    assert "lam: 4.0" in out and "in_channels: 1" in out  # resolved
    assert out.rstrip().endswith(f"# experiment folder: {tmp_path / 'runs' / 'glyphs-proxy_anchor-skewed_mean-linear'}")
    assert not (tmp_path / "runs").exists()
    assert cli_main(["run", "--cfg", "job", *tiny(tmp_path), "+epoch=1"]) == 2  # checked too
    assert "did you mean epochs?" in capsys.readouterr().err


def test_sweeps_expand_as_hydras_basic_sweeper_does():
    assert sweep_jobs(["a=1,2", "b=3", "c=x,y"]) == [
        ["a=1", "b=3", "c=x"],
        ["a=1", "b=3", "c=y"],
        ["a=2", "b=3", "c=x"],
        ["a=2", "b=3", "c=y"],
    ]
    assert sweep_jobs(["+seeds=range(1,3)"]) == [["+seeds=1"], ["+seeds=2"]]
    assert split_arguments(["-m", "--cfg", "job", "a=1", "--info", "b=2"]) == (
        ["a=1", "b=2"],
        {"-m", "--cfg", "--info"},
    )


@pytest.mark.slow
def test_a_multirun_sweep_runs_its_jobs_in_parallel_processes(tmp_path):
    args = tiny(tmp_path, "seeds=1", "epochs=1")
    status, out, err = run_cli("run", "-m", *args, "regularizer=none,skewed_mean", "hydra.launcher.n_jobs=2")
    assert status == 0, err
    assert "Traceback" not in err
    assert "sweep: 2 of 2 jobs ended, 0 failed" in out
    for name in ("glyphs-proxy_anchor-linear", "glyphs-proxy_anchor-skewed_mean-linear"):
        assert (tmp_path / "runs" / name / "results.json").is_file()
    assert len(list((tmp_path / "runs" / "multirun").glob("*/multirun.yaml"))) == 1


def test_a_sweep_with_a_bad_job_is_refused_before_any_job_starts(tmp_path, capsys):
    # the first job is valid; the second's regularizer takes no lam
    status = cli_main(["run", "-m", *tiny(tmp_path), "regularizer=skewed_mean,regular_face", "regularizer.lam=2"])
    err = capsys.readouterr().err
    assert status == 2 and "unknown key regularizer.lam" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_run_prints_one_line_per_epoch_and_nothing_else_on_stderr(tmp_path):
    status, out, err = run_cli("run", *tiny(tmp_path, "seeds=2", "epochs=2", "cv_folds=2"))
    assert status == 0, err
    assert err == ""  # no progress bars, no PML or faiss warnings
    assert out.startswith(f"glyphs-proxy_anchor-linear: 2 seed(s) x 2 fold(s), at most 2 epochs each ({tmp_path}")
    lines = [line for line in out.splitlines() if line.startswith("seed ")]
    assert len(lines) == 2 * 2 * 2
    assert lines[0].startswith("seed 0 (1/2) fold 1/2 epoch 1/2: loss ")
    assert "val MAP@R " in lines[0] and "(best " in lines[0] and " elapsed, ~" in lines[0]
    assert lines[-1].startswith("seed 1 (2/2) fold 2/2 epoch 2/2: ") and lines[-1].endswith("~0:00:00 left")


def test_progress_lines_follow_whatever_stdout_is(tmp_path, monkeypatch, capsys):
    """The progress handler once kept the stdout of its first run: closed later (as pytest's capture
    is), it made every later run print a logging error with a traceback."""
    first, second = io.StringIO(), io.StringIO()
    args = tiny(tmp_path, "seeds=1", "epochs=1")
    monkeypatch.setattr(sys, "stdout", first)
    assert cli_main(["run", *args, "experiment=first"]) == 0
    first.close()
    monkeypatch.setattr(sys, "stdout", second)
    assert cli_main(["run", *args, "experiment=second"]) == 0
    assert "seed 0 (1/1) fold 1/1 epoch 1/1: loss " in second.getvalue()
    assert "Logging error" not in capsys.readouterr().err
