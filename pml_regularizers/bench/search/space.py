"""A search space: config keys with the values a search may give them, written in Hydra's sweep
grammar (as for ``pml-bench run -m``) and turned into Optuna's distributions.

==================================================  ================================================
``optimizer.lr: tag(log, interval(1e-5, 1e-1))``    log-uniform float in [1e-5, 1e-1]
``regularizer.lam: interval(1, 64)``                uniform float in [1, 64]
``trainer.num_samples: tag(int, interval(1, 20))``  integer in [1, 20]
``trainer.phase2_start_epoch: range(2, 8)``         integer in 2, 3, ..., 7
``miner: choice(none, multi_similarity)``           one of the listed values (a group's options too)
==================================================  ================================================

A key is a typed key of the run config (``optimizer.lr``) or a config group (``miner``); it is
checked against the composed config, and a key it lacks is refused naming the closest one.

A search's space (:func:`resolve_space`) starts from the ranges that the config's groups declare
next to their values (their ``_search_`` nodes: the optimizer's learning rates, a regularizer's
weight, ...), without the keys the config's overrides set, and takes the entries given to it on
top: a new range replaces the declared one, ``null`` drops the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..spec.run_spec import GROUPS, closest

__all__ = ["Dimension", "SearchSpace", "parse_space", "resolve_space"]


@dataclass(frozen=True)
class Dimension:
    """One searched key.

    Attributes
    ----------
    key : str
        The config key (``optimizer.lr``) or group (``miner``).
    expression : str
        How it was written (Hydra's sweep grammar).
    distribution : optuna.distributions.BaseDistribution
        Optuna's distribution of its values.
    """

    key: str
    expression: str
    distribution: Any

    def override(self, value: Any) -> str:
        """The command-line override that sets the key to ``value``."""
        return f"{self.key}={value}"

    def suggest(self, trial: Any) -> Any:
        """Ask ``trial`` (an ``optuna.Trial``) for a value of the key."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.key, d.choices)
        if isinstance(d, FloatDistribution):
            return trial.suggest_float(self.key, d.low, d.high, log=d.log)
        return trial.suggest_int(self.key, d.low, d.high, step=d.step, log=d.log)

    def at_edge(self, value: Any) -> bool:
        """Whether ``value`` lies at an edge of a numeric range (within 1% of the range, on the log
        scale for a log range); False for a choice."""
        from optuna.distributions import FloatDistribution, IntDistribution

        d = self.distribution
        if not isinstance(d, (FloatDistribution, IntDistribution)):
            return False
        low, high, x = float(d.low), float(d.high), float(value)
        if d.log:
            low, high, x = math.log(low), math.log(high), math.log(x)
        margin = 0.01 * (high - low)
        return x <= low + margin or x >= high - margin


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys, in the order given."""

    dimensions: tuple[Dimension, ...]

    def __bool__(self) -> bool:
        return bool(self.dimensions)

    def suggest(self, trial: Any) -> list[str]:
        """Ask ``trial`` (an ``optuna.Trial``) for a value of each key; the overrides that set them."""
        return [d.override(d.suggest(trial)) for d in self.dimensions]

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides that set each key to its value in ``params`` (a trial's parameters)."""
        return [d.override(params[d.key]) for d in self.dimensions]

    def edges(self, params: Mapping[str, Any]) -> list[str]:
        """The keys whose value in ``params`` lies at an edge of its range."""
        return [d.key for d in self.dimensions if d.at_edge(params[d.key])]

    def to_dict(self) -> dict[str, str]:
        """``{key: expression}``, as the space is written."""
        return {d.key: d.expression for d in self.dimensions}


def parse_space(space: Mapping[str, str], config: Mapping[str, Any] | None = None) -> SearchSpace:
    """Parse a search space.

    Parameters
    ----------
    space : mapping of str to str
        ``{key: expression}``.
    config : mapping, optional
        The composed run config (plain containers): each key must be one of its keys, or a group.

    Returns
    -------
    SearchSpace

    Raises
    ------
    ConfigError
        For an expression that is not a sweep Hydra parses (``interval``, ``range``, ``choice``,
        with the tags ``log`` and ``int``), an empty or reversed range, a log range that is not
        positive, or a key the config lacks (naming the closest).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    dimensions = []
    for key, expression in space.items():
        if config is not None:
            _check_key(key, config)
        try:
            (override,) = parser.parse_overrides([f"{key}={expression}"])
        except HydraException as err:
            raise ConfigError(f"search space {key}: cannot parse {expression!r} ({err})") from None
        dimensions.append(Dimension(key, str(expression), _distribution(key, str(expression), override)))
    return SearchSpace(tuple(dimensions))


def resolve_space(
    overrides: Sequence[str], config: Mapping[str, Any], entries: Mapping[str, str | None] | None = None
) -> SearchSpace:
    """The space a search of the config ``overrides`` compose explores (the module's description).

    Parameters
    ----------
    overrides : sequence of str
        The config's overrides; a key they set is not searched unless ``entries`` names it, which is
        refused.
    config : mapping
        The config they compose (plain containers), that each key is checked against.
    entries : mapping, optional of str to (str or None)
        Ranges to add or replace; ``None`` drops a key.

    Raises
    ------
    ConfigError
        For an entry :func:`parse_space` refuses, a key both set by ``overrides`` and searched, or
        an empty space.
    """
    from ..spec.compose import load_search_ranges

    entries = entries or {}
    set_keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    both = sorted(k for k, v in entries.items() if v is not None and k in set_keys)
    if both:
        raise ConfigError(f"search space: {', '.join(both)} is set by an override and searched; drop one of the two")
    ranges: dict[str, str | None] = {k: v for k, v in load_search_ranges(overrides).items() if k not in set_keys}
    ranges.update(entries)
    kept = {k: v for k, v in ranges.items() if v is not None}
    if not kept:
        raise ConfigError("a search needs at least one searched key: none is declared or given")
    return parse_space(kept, config)


def _check_key(key: str, config: Mapping[str, Any]) -> None:
    if key in GROUPS:
        return
    node: Any = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Mapping) or part not in node:
            keys = list(node) if isinstance(node, Mapping) else []
            prefix = ".".join(parts[:depth])
            hint = closest(part, keys, f"{prefix}." if prefix else "")
            raise ConfigError(f"search space: unknown key {key}{hint}")
        node = node[part]


def _distribution(key: str, expression: str, override: Any) -> Any:
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, QuotedString, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    tags = set(getattr(value, "tags", set()) or set())
    unknown = tags - {"log", "int"}
    if unknown:
        raise ConfigError(f"search space {key}: unknown tag(s) {sorted(unknown)} in {expression!r}; use log or int")
    log = "log" in tags
    if isinstance(value, ChoiceSweep):
        choices: list[bool | int | float | str | None] = []
        for choice in value.list:
            if isinstance(choice, QuotedString):
                choice = str(choice)
            if not (choice is None or isinstance(choice, (bool, int, float, str))):
                raise ConfigError(f"search space {key}: choice() takes plain values, got {expression!r}")
            choices.append(choice)
        if not choices:
            raise ConfigError(f"search space {key}: choice() needs at least one value")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, 1 if value.step is None else value.step
        wrong = f"search space {key}: range() needs integers with start < stop and step >= 1, got {expression!r}"
        if not (isinstance(start, int) and isinstance(stop, int) and isinstance(step, int)):
            raise ConfigError(wrong)
        if step < 1 or stop <= start:
            raise ConfigError(wrong)
        if log and step != 1:
            raise ConfigError(f"search space {key}: a log range has step 1, got {expression!r}")
        last = start + step * ((stop - 1 - start) // step)  # Python's range(start, stop, step)
        return IntDistribution(start, last, log=log, step=step)
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or not low < high:
            raise ConfigError(f"search space {key}: interval() needs numbers low < high, got {expression!r}")
        if log and low <= 0:
            raise ConfigError(f"search space {key}: a log range needs low > 0, got {expression!r}")
        if "int" in tags:
            if math.ceil(low) > math.floor(high):
                raise ConfigError(f"search space {key}: {expression!r} holds no integer")
            return IntDistribution(math.ceil(low), math.floor(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ConfigError(
        f"search space {key}: {expression!r} is not a range; use interval(a, b), range(a, b) or choice(...), "
        "with tag(log, ...) for a log scale"
    )
