"""What the experiment scripts share: the command line a report quotes, and an experiment's
validation score."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np

from pml_regularizers.bench import PRIMARY_METRIC, ExperimentFolder


def script_command(module: str, argv: list[str] | None) -> str:
    """The command line that ran the script ``module`` (``python -m experiments.<name>``), as the
    reports quote it."""
    return shlex.join(["python", "-m", module, *(argv if argv is not None else sys.argv[1:])])


def val_score(exp_dir: Path) -> float:
    """Mean validation MAP@R over the seeds of the experiment folder ``exp_dir``."""
    records = ExperimentFolder(exp_dir).records()
    return float(np.mean([r["metrics"][PRIMARY_METRIC] for r in records if r["split"] == "val"]))
