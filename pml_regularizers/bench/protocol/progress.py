"""Where a run is: one line per trained epoch, logged to this module's logger
(``pml_regularizers.bench.protocol.progress``).

A first line names the experiment, its seeds, folds and epoch cap, and its folder. Then each line
names the seed, the fold and the epoch, the epoch's mean training loss, the validation
MAP@R and the best so far (when the fold validates), the time since the run started and an
estimate of what is left, for example::

    seed 0 (1/3) fold 2/4 epoch 3/50: loss 0.4123, val MAP@R 0.3312 (best 0.3312 at epoch 3),
    0:01:23 elapsed, ~0:12:00 left

The estimate is the mean time of the epochs trained so far times the epochs still to train, each
fold counted at its epoch cap, so early stopping makes the run end sooner. ``pml-bench`` shows these
lines; from Python they go wherever logging sends INFO records of that logger.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LOGGER", "RunProgress"]

LOGGER = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class RunProgress:
    """The epochs of one run: how many are left, and how fast they go.

    Attributes
    ----------
    seeds : range
        The run's seeds.
    folds : int
        Trained models per seed.
    epochs : int
        The epoch cap of every fold.
    """

    seeds: range
    folds: int
    epochs: int
    _start: float = field(default_factory=time.monotonic, repr=False)
    _trained: int = field(default=0, repr=False)
    _training_seconds: float = field(default=0.0, repr=False)

    def began(self, experiment: str, folder: Path) -> str:
        """Log (and return) the line that opens a run: the experiment, its size, its folder."""
        line = (
            f"{experiment}: {len(self.seeds)} seed(s) x {self.folds} fold(s), at most {self.epochs} epochs each "
            f"({folder})"
        )
        LOGGER.info(line)
        return line

    def epoch_ended(
        self,
        seed: int,
        fold: int,
        epoch: int,
        loss: float,
        seconds: float,
        val_score: float | None = None,
        best: tuple[int, float] | None = None,
    ) -> str:
        """Log (and return) the line of an epoch that took ``seconds``; ``val_score`` and ``best``
        (the best epoch and its score) for a fold that validates."""
        self._trained += 1
        self._training_seconds += seconds
        position = self.seeds.index(seed)
        line = (
            f"seed {seed} ({position + 1}/{len(self.seeds)}) fold {fold + 1}/{self.folds} "
            f"epoch {epoch}/{self.epochs}: loss {loss:.4f}"
        )
        if val_score is not None:
            line += f", val MAP@R {val_score:.4f}"
            if best is not None:
                line += f" (best {best[1]:.4f} at epoch {best[0]})"
        left = (self.epochs - epoch) + ((len(self.seeds) - position) * self.folds - fold - 1) * self.epochs
        per_epoch = self._training_seconds / self._trained
        line += f", {_clock(time.monotonic() - self._start)} elapsed, ~{_clock(left * per_epoch)} left"
        LOGGER.info(line)
        return line
