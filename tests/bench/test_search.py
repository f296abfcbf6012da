"""``pml-bench search`` end to end on tiny data: the chosen setting is the best validation trial of
the budget and is tested once; the test classes are never decoded during the search; pruning stops
trials; kill -9 and a rerun lose and repeat no finished trial; workers in two processes, on one SQLite
file or on a real PostgreSQL server, run distinct trials."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from pml_regularizers.bench.cli import main as cli_main
from pml_regularizers.bench.errors import ConfigError, ImageDecodeError
from pml_regularizers.bench.results.folder import ExperimentFolder
from pml_regularizers.bench.results.trained_epochs import trained_epochs
from pml_regularizers.bench.search.budget import SearchBudget
from pml_regularizers.bench.search.search import run_search

from .postgres import postgres_database
from .test_runner import tiny as runner_tiny
from .trees import write_folder_tree

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def tiny(tmp_path, *extra):
    """The runner tests' tiny config, without the epochs and seeds a search's budget sets."""
    return [o for o in runner_tiny(tmp_path, *extra) if not o.startswith(("epochs=", "seeds="))]


def study_of(folder, name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")


def finished(study):
    return [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]


def test_search_tests_the_best_validation_trial_once(tmp_path, capsys):
    args = ["search", *tiny(tmp_path, "regularizer=skewed_mean"), "--trials", "5", "--epochs", "2", "--folds", "2"]
    assert cli_main([*args, "--seeds", "2", "--name", "sm"]) == 0
    printed = capsys.readouterr().out
    folder = tmp_path / "runs" / "search" / "sm"
    report = folder / "report"
    assert f"full report: {report / 'report.md'}" in printed
    data = json.loads((report / "report.json").read_text())
    (search,) = data["searches"]
    counted = [t for t in search["trials"] if t["counted"]]
    assert len(counted) == 5 and search["budget"]["trials"] == 5
    complete = [t for t in counted if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    assert search["best_value"] == best["value"]
    assert search["best_overrides"] == [f"{k}={v}" for k, v in best["params"].items()]
    assert set(best["params"]) == {"regularizer.weight", "regularizer.lam", "optimizer.lr", "optimizer.loss_lr"}
    # each trial is an experiment on the validation folds alone, scored by their mean best MAP@R
    study = study_of(folder, "sm")
    for trial in finished(study):
        exp = ExperimentFolder(Path(trial.user_attrs["experiment"]))
        assert exp.config()["test"] is False and exp.config()["cv_folds"] == 2
        if trial.state.name == "COMPLETE":
            (record,) = exp.records()
            assert record["split"] == "val" and record["metrics"]["mean_average_precision_at_r"] == trial.value
    # the chosen setting, trained on 2 seeds and tested once each on the held-out classes
    final = ExperimentFolder(Path(search["final"]))
    for key, value in best["params"].items():
        group, name = key.split(".")
        assert final.config()[group][name] == value
    tests = [r for r in final.records() if r["split"] == "test"]
    assert sorted({r["seed"] for r in tests}) == [0, 1]
    text = (report / "report.md").read_text()
    assert "## Search (validation only)" in text and "[sm](search-sm.md)" in text
    page = (report / "search-sm.md").read_text()
    for png in ("search-sm-history.png", "search-sm-importances.png", "search-sm-slice-regularizer.lam.png"):
        assert f"]({png})" in page and (report / png).stat().st_size > 0
    assert page.count("| yes |") == 5  # the trials table marks what the budget counts
    for trial in search["trials"]:  # and names each trial's folder
        assert trial["folder"] == study.trials[trial["number"]].user_attrs["experiment"]
        assert f"| yes | {Path(trial['folder']).name} |" in page
    # a second run finds the study done: no new trial, the same choice
    assert cli_main([*args, "--seeds", "2", "--name", "sm"]) == 0
    assert len(study_of(folder, "sm").get_trials()) == len(study.get_trials())
    assert json.loads((report / "report.json").read_text())["searches"][0]["best_overrides"] == search["best_overrides"]
    # the same name with another config is refused, not mixed into the study
    with pytest.raises(ConfigError, match=r"made with another overrides \("):
        run_search("sm", tiny(tmp_path, "regularizer=skewed_mean", "loss=proxy_nca"), None, budget(5))


def budget(trials, epochs=2, final_seeds=1, patience=None):
    return SearchBudget(trials=trials, epochs=epochs, cv_folds=2, patience=patience, final_seeds=final_seeds)


def test_the_search_never_decodes_a_test_class_image(tmp_path):
    """Classes sorted, the second half is tested: its files here are not images. The trials run
    (their folds are drawn from the first half), and only the final runs, which test, fail on them."""
    root = write_folder_tree(tmp_path / "data", classes=8, per_class=4)
    for class_dir in sorted(root.iterdir())[4:]:
        for image in class_dir.iterdir():
            image.write_bytes(b"not an image")
    overrides = [
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.size=16",
        "dataset.resize=18",
        "embedding_size=4",
        "batch_size=8",
        "num_workers=0",
        f"output_dir={tmp_path / 'runs'}",
    ]
    with pytest.raises(ImageDecodeError, match="class_00[5-8]"):
        run_search("folder", overrides, {"optimizer.loss_lr": None}, budget(3, epochs=1))
    study = study_of(tmp_path / "runs" / "search" / "folder", "folder")
    assert len(finished(study)) == 3 and not [t for t in study.get_trials() if t.state.name == "FAIL"]


def test_a_config_no_trial_can_run_ends_the_search_naming_the_error(tmp_path):
    """Every trial fails in the runner's checks (a batch larger than a fold): the search stops once
    the budget's trials failed, with one error line naming the first trial's error, no traceback."""
    args = ["search", *tiny(tmp_path, "batch_size=200"), "--trials", "2", "--epochs", "1", "--folds", "2"]
    run = subprocess.run([sys.executable, "-m", "pml_regularizers.bench", *args], capture_output=True, text=True)
    assert run.returncode == 2
    err = run.stderr
    assert "trial 0 of 2 failed: fold 0 trains on" in err and "batch_size is 200" in err
    assert "Traceback" not in err
    study = study_of(tmp_path / "runs" / "search" / "glyphs-proxy_anchor-linear", "glyphs-proxy_anchor-linear")
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL"]


def test_pruning_stops_trials_that_fall_behind(tmp_path):
    """Learning rates from far too small to fair: the median pruner stops some trials after a few
    of their 6 validated epochs (2 folds of 3); without it, every trial trains all of them."""
    space = {"optimizer.lr": "tag(log, interval(1e-7, 1e-2))", "optimizer.loss_lr": None}
    result = run_search("pruned", tiny(tmp_path), space, budget(10, epochs=3))
    pruned = [t for t in result.trials if t.state == "PRUNED"]
    assert pruned, [(t.state, t.params, t.value) for t in result.trials]
    assert all(0 < t.epochs < 6 for t in pruned)
    assert all(t.epochs == 6 for t in result.trials if t.state == "COMPLETE")
    plain = run_search("plain", tiny(tmp_path), space, budget(10, epochs=3), prune=False)
    assert {t.state for t in plain.trials} == {"COMPLETE"}
    assert sum(t.epochs for t in plain.trials) == 60 > sum(t.epochs for t in result.trials)


def search_process(tmp_path, *extra, name="s", trials=4):
    args = [*tiny(tmp_path, "regularizer=skewed_mean"), "--trials", str(trials), "--epochs", "2", "--folds", "2"]
    command = [sys.executable, "-m", "pml_regularizers.bench", "search", *args, "--seeds", "1", "--name", name]
    return subprocess.Popen(
        [*command, *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for(condition, seconds=180):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def checkpoints(exp_dir):
    return list(exp_dir.glob("seed_*/fold_*/checkpoint_latest.pt"))


def test_kill_9_and_rerun_keeps_every_finished_trial(tmp_path):
    folder = tmp_path / "runs" / "search" / "s"
    process = search_process(tmp_path)

    def one_finished_and_one_running():
        if not (folder / "study.db").exists():
            return False
        try:
            trials = study_of(folder, "s").get_trials()
        except Exception:  # the database or the study is still being created
            return False
        states = [t.state.name for t in trials]
        running = [t for t in trials if t.state.name == "RUNNING" and "experiment" in t.user_attrs]
        # killed with at least one epoch of the running trial saved, which its retry resumes
        return "COMPLETE" in states and running and checkpoints(Path(running[0].user_attrs["experiment"]))

    wait_for(one_finished_and_one_running)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = study_of(folder, "s").get_trials()
    done = {t.number: (t.params, t.value) for t in before if t.state.name in ("COMPLETE", "PRUNED")}
    (killed,) = [t for t in before if t.state.name == "RUNNING"]
    rerun = search_process(tmp_path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    after = study_of(folder, "s").get_trials()
    for number, (params, value) in done.items():  # kept as they were
        assert (after[number].params, after[number].value) == (params, value)
    assert after[killed.number].state.name == "FAIL"
    retried = [t for t in after if t.number > killed.number and t.params == killed.params]
    assert len(retried) == 1 and retried[0].state.name in ("COMPLETE", "PRUNED")
    assert retried[0].user_attrs["experiment"] == killed.user_attrs["experiment"]  # its folder resumed
    # its epochs and CPU count those of the killed worker too, as its folds' checkpoints record them
    runs = trained_epochs(Path(killed.user_attrs["experiment"]))
    assert retried[0].user_attrs["epochs"] == sum(r.epochs for r in runs)
    assert retried[0].user_attrs["cpu_seconds"] >= sum(r.cpu_seconds for r in runs)
    finished_params = [tuple(sorted(t.params.items())) for t in after if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished_params) == len(set(finished_params)) == 4  # none repeated, the budget met
    assert "process died; the trial is retried" in err


def assert_distinct_workers(trials, budget_trials):
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) >= budget_trials
    assert len({t.number for t in done}) == len(done)
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # no setting twice
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both processes ran trials


def test_two_processes_share_one_sqlite_study(tmp_path):
    processes = [search_process(tmp_path, "--search-only", trials=6) for _ in range(2)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert "the final runs are left to a run without --search-only" in out
    folder = tmp_path / "runs" / "search" / "s"
    assert_distinct_workers(study_of(folder, "s").get_trials(), 6)
    assert not (folder / "final").exists()
    main = search_process(tmp_path, trials=6)  # trains and tests the choice, running no new trial
    count = len(study_of(folder, "s").get_trials())
    _, err = main.communicate(timeout=300)
    assert main.returncode == 0, err
    assert len(study_of(folder, "s").get_trials()) == count
    assert (folder / "final" / "s" / "results.json").exists()


def test_two_workers_share_a_study_on_a_postgresql_server(tmp_path):
    with postgres_database() as url:
        processes = [search_process(tmp_path, "--search-only", "--storage", url, trials=6) for _ in range(2)]
        for process in processes:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        trials = optuna.load_study(study_name="s", storage=url).get_trials()
        assert_distinct_workers(trials, 6)
        assert not (tmp_path / "runs" / "search" / "s" / "study.db").exists()  # nothing in SQLite


def test_workers_on_one_machine(tmp_path):
    result = run_search("w", tiny(tmp_path, "regularizer=skewed_mean"), None, budget(4), workers=2)
    done = finished(study_of(result.folder, "w"))
    assert len({t.user_attrs["worker"] for t in done}) == 2 and sum(t.counted for t in result.trials) == 4
    assert result.final is not None and (result.final / "results.json").exists()
