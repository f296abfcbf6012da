"""Optuna's TPE sampler, seeded per trial: trial ``n`` draws from a TPE sampler seeded with
``(seed, n)``, so that a search is reproducible on one worker and workers that share a study (on one
machine or several, all with the same ``--seed``) never draw the same random settings: a TPE
sampler seeded once per process would give every worker the same sequence of start-up trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["TrialSeededTPESampler"]


class TrialSeededTPESampler(BaseSampler):
    """:class:`optuna.samplers.TPESampler` with its random state drawn from ``(seed, trial number)``.

    Parameters
    ----------
    seed : int
        The search's seed.
    **tpe_options
        Further arguments of :class:`~optuna.samplers.TPESampler` (not ``seed``).
    """

    def __init__(self, seed: int, **tpe_options: Any) -> None:
        if "seed" in tpe_options:
            raise TypeError("TrialSeededTPESampler takes seed as its own argument")
        self.seed = seed
        self._options = tpe_options
        self._samplers: dict[int, TPESampler] = {}

    def _sampler(self, trial: FrozenTrial) -> TPESampler:
        """The trial's TPE sampler: one per trial, so that its keys draw from one random stream."""
        if trial.number not in self._samplers:
            seed = (self.seed * 1_000_003 + trial.number) % 2**32
            self._samplers[trial.number] = TPESampler(seed=seed, **self._options)
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._sampler(trial).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        sampler = self._sampler(trial)
        del self._samplers[trial.number]  # the trial is over
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: each trial's random state follows from the seed and its number."""
