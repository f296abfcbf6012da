"""What a search may spend, the same for every row of a study: trials, the epoch cap and early
stopping of each training run, its validation folds, and the seeds of the final runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..._arguments import is_int
from ..errors import ConfigError

__all__ = ["SearchBudget"]


@dataclass(frozen=True)
class SearchBudget:
    """A search's budget.

    Attributes
    ----------
    trials : int
        Finished (complete or pruned) trials; 0 runs the config as it is, without a search.
    epochs : int
        The epoch cap of every trial and final run.
    cv_folds : int
        Class-disjoint validation folds of every trial and final run (0: none, only without trials).
    patience : int or None
        Early stopping on validation MAP@R (needs folds).
    final_seeds : int
        Seeds of the final runs, each tested once on the held-out classes.
    """

    trials: int
    epochs: int
    cv_folds: int
    patience: int | None
    final_seeds: int

    def __post_init__(self) -> None:
        if not is_int(self.trials, 0):
            raise ConfigError(f"trials must be an int >= 0, got {self.trials!r}")
        if not is_int(self.epochs, 1):
            raise ConfigError(f"epochs must be an int >= 1, got {self.epochs!r}")
        if not is_int(self.cv_folds, 0) or self.cv_folds == 1:
            raise ConfigError(f"cv_folds must be 0 or an int >= 2, got {self.cv_folds!r}")
        if self.trials and self.cv_folds < 2:
            raise ConfigError(f"a search of {self.trials} trials needs cv_folds >= 2 (it selects on validation)")
        if self.patience is not None and (not is_int(self.patience, 1) or self.cv_folds < 2):
            raise ConfigError(f"patience must be null, or an int >= 1 with cv_folds >= 2, got {self.patience!r}")
        if not is_int(self.final_seeds, 1):
            raise ConfigError(f"final_seeds must be an int >= 1, got {self.final_seeds!r}")

    def run_overrides(self) -> list[str]:
        """The overrides every training run of the search gets: epochs, folds and patience."""
        patience = "null" if self.patience is None else str(self.patience)
        return [f"epochs={self.epochs}", f"cv_folds={self.cv_folds}", f"patience={patience}"]

    def to_dict(self) -> dict:
        """The budget as JSON-ready data."""
        return asdict(self)
