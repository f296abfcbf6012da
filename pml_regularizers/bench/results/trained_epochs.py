"""How long each training run of an experiment trained: the epochs of every seed's folds, the epoch
it tested, whether it stopped at the epoch cap (a model that may still have been improving) rather
than by early stopping, and the CPU time its training took over every process that worked on it (a
run resumed after a kill included); read from the folds' latest checkpoints."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .checkpoints import read_checkpoint
from .folder import ExperimentFolder
from .io import write_json

__all__ = ["FoldEpochs", "trained_epochs", "trained_epochs_section"]

TRAINED_EPOCHS_JSON = "trained_epochs.json"


@dataclass(frozen=True)
class FoldEpochs:
    """One training run (a seed's fold) of an experiment.

    Attributes
    ----------
    seed, fold : int
        Which run.
    epochs : int
        The epochs it trained.
    tested_epoch : int
        The epoch whose models it tested: the best validation epoch with folds, else the last.
    cap : int
        The experiment's epoch cap (``epochs`` of its config).
    cpu_seconds : float or None
        CPU seconds of its training up to its last finished epoch, validation included (this
        process's and its exited DataLoader workers'); None for a checkpoint saved before the runner
        recorded it.
    """

    seed: int
    fold: int
    epochs: int
    tested_epoch: int
    cap: int
    cpu_seconds: float | None = None

    @property
    def at_cap(self) -> bool:
        """Whether it trained to the cap (early stopping, if any, did not end it)."""
        return self.epochs >= self.cap


def trained_epochs(exp_dir: str | os.PathLike) -> list[FoldEpochs]:
    """Every finished training run of the experiment ``exp_dir``, by seed and fold.

    Raises
    ------
    ValueError
        When a fold has no latest checkpoint, naming it.
    """
    folder = ExperimentFolder(Path(exp_dir))
    config = folder.config()
    validated = bool(config.get("cv_folds", 0))
    runs = []
    for seed in folder.seeds():
        for fold in folder.folds_of(seed):
            if not fold.latest.is_file():
                raise ValueError(f"{fold.path} has no {fold.latest.name}: the run did not train")
            state = read_checkpoint(fold.latest)["state"]
            tested = state["best_epoch"] if fold.tests_best(validated) else state["epoch"]
            cpu = state.get("cpu_seconds")
            runs.append(
                FoldEpochs(
                    fold.seed,
                    fold.fold,
                    int(state["epoch"]),
                    int(tested),
                    int(config["epochs"]),
                    None if cpu is None else float(cpu),
                )
            )
    return runs


def trained_epochs_section(exp_dirs: Sequence[str | os.PathLike], out: Path) -> list[str]:
    """The Markdown lines of a report's section on how long each experiment's runs trained, writing
    every run's figures to ``trained_epochs.json`` in ``out``."""
    runs = {Path(d).name: trained_epochs(d) for d in exp_dirs}
    write_json(
        out / TRAINED_EPOCHS_JSON, {name: [{**asdict(r), "at_cap": r.at_cap} for r in rs] for name, rs in runs.items()}
    )
    lines = [
        "## Epochs trained (final runs)",
        "",
        "Per training run (seed and fold): the epochs it trained and the epoch whose models it tested. "
        "A run at the epoch cap was not stopped by early stopping and may still have been improving. "
        "Training CPU is summed over the runs and over every process that worked on them.",
        "",
        "| experiment | runs | epochs trained (min / median / max) | tested epoch (min / median / max) | at the cap "
        "| training CPU |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        trained = sorted(r.epochs for r in rs)
        tested = sorted(r.tested_epoch for r in rs)
        capped = sum(r.at_cap for r in rs)
        cap = f"{capped} of {len(rs)} (cap {rs[0].cap})" if rs else "–"
        cpus = [r.cpu_seconds for r in rs]
        cpu = "–" if not cpus or None in cpus else f"{sum(c for c in cpus if c is not None) / 60:.1f} min"
        lines.append(f"| {name} | {len(rs)} | {_spread(trained)} | {_spread(tested)} | {cap} | {cpu} |")
    return [*lines, ""]


def _spread(values: list[int]) -> str:
    if not values:
        return "–"
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}"
