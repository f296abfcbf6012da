"""Benchmark configs: YAML groups composed by Hydra, with command-line style overrides, checked
into a :class:`~pml_regularizers.bench.spec.run_spec.RunSpec`.

The groups live in ``pml_regularizers/bench/conf/<group>/<choice>.yaml``: dataset, trunk, embedder,
loss, miner, regularizer, optimizer, trainer, sampler, preset. Any PML or plugin class can be named
by import path through ``_target_`` and its arguments (``loss._target_=pytorch_metric_learning.losses.CircleLoss
+loss.m=0.3``). Hydra reports a wrong group choice with the valid choices; the spec refuses an
unknown key (with or without ``+``), naming the closest valid one, and a value out of range; the
targets' arguments are checked against their classes
(:func:`~pml_regularizers.bench.spec.targets.check_components`).

A group's file may declare, under ``_search_``, the ranges that ``pml-bench search`` tries for its
values, next to them (``lr: tag(log, interval(1e-5, 1e-1))``): :func:`load_search_ranges` reads
them; they are not part of the run's config (nor of its digest).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from .run_spec import GROUPS, RunSpec, closest

__all__ = ["CONF_MODULE", "SEARCH_KEY", "finish_config", "load_config", "load_search_ranges", "load_spec"]

CONF_MODULE = "pml_regularizers.bench.conf"
SEARCH_KEY = "_search_"


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the benchmark config from its groups and ``key=value`` overrides, as ``pml-bench
    run`` composes it.

    Parameters
    ----------
    overrides : sequence of str
        Hydra override strings, e.g. ``["loss=arcface", "regularizer=skewed_mean",
        "regularizer.lam=8", "seeds=5"]``.

    Returns
    -------
    DictConfig
        The resolved config, with the chosen option of each group under ``choices``; not yet
        checked (:func:`load_spec` checks it).

    Raises
    ------
    ConfigError
        For an unknown group option (listing the valid ones), an override of a key the config lacks
        (without ``+``), or a value Hydra cannot parse or resolve.
    """
    cfg = _compose_checked(overrides)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return finish_config(cfg, choices)


def load_search_ranges(overrides: Sequence[str] = ()) -> dict[str, str]:
    """The search ranges that the groups of the config ``overrides`` compose declare (their
    ``_search_`` nodes), as ``{"optimizer.lr": "tag(log, interval(1e-5, 1e-1))", ...}``.

    Raises
    ------
    ConfigError
        As :func:`load_config`, and for a ``_search_`` node that is not a mapping of keys of its
        group to expressions.
    """
    cfg = _compose_checked(overrides)
    ranges = {}
    for name, node in cfg.items():
        group = str(name)
        if group == "hydra" or not isinstance(node, DictConfig) or SEARCH_KEY not in node:
            continue
        declared = node[SEARCH_KEY]
        if not isinstance(declared, DictConfig):
            raise ConfigError(f"{group}.{SEARCH_KEY} must map keys of {group} to ranges, got {declared!r}")
        for entry, expression in declared.items():
            key = str(entry)
            if OmegaConf.select(node, key) is None or not isinstance(expression, str):
                raise ConfigError(f"{group}.{SEARCH_KEY}.{key}: a range of a key of {group}, got {expression!r}")
            ranges[f"{group}.{key}"] = expression
    return ranges


def _compose_checked(overrides: Sequence[str]) -> DictConfig:
    try:
        return _compose(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_unknown_key_message(err, overrides) or str(err)) from err


def _compose(overrides: Sequence[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _unknown_key_message(err: Exception, overrides: Sequence[str]) -> str | None:
    """For Hydra's refusal of an override of a key the config lacks, a message naming the closest
    key the config has there (composed without that override); None for any other error."""
    match = re.match(r"Could not override '([^']+)'", str(err))
    if match is None:
        return None
    key = match.group(1)
    parent, _, leaf = key.rpartition(".")
    try:
        cfg = _compose([o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key])
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except (HydraException, OmegaConfBaseException):
        return None
    hidden = ("hydra", "_target_", SEARCH_KEY)
    valid = [str(k) for k in node.keys() if k not in hidden] if isinstance(node, DictConfig) else []
    hint = closest(leaf, valid, f"{parent}." if parent else "")
    if hint:
        return f"unknown key {key}{hint}"
    if not parent:
        return f"unknown key {key}; the keys of the config's top level: {', '.join(sorted(valid))}"
    return (
        f"unknown key {key}; the config has no such key (a new one, such as an argument of a _target_ "
        f"group's class that its config does not set, is added with +{key}=...)"
    )


def finish_config(cfg: DictConfig, choices: Mapping[str, str | None]) -> DictConfig:
    """Add the group ``choices`` (Hydra's ``hydra.runtime.choices``) to a composed config as its
    ``choices`` key and resolve its interpolations; what :func:`load_config` and the ``pml-bench``
    Hydra application share.

    Raises
    ------
    ConfigError
        For an interpolation that does not resolve, or a required key left unset (``???``).
    """
    with open_dict(cfg):
        for node in cfg.values():
            if isinstance(node, DictConfig) and SEARCH_KEY in node:
                del node[SEARCH_KEY]
        cfg.choices = {group: choices.get(group) for group in GROUPS}
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(str(err)) from err
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"these keys must be set for this config: {', '.join(missing)} (e.g. {missing[0]}=/path/to/data)"
        )
    return cfg


def load_spec(overrides: Sequence[str] = ()) -> RunSpec:
    """The checked spec of the config ``overrides`` compose (:func:`load_config`): every key
    (:meth:`RunSpec.from_config <pml_regularizers.bench.spec.run_spec.RunSpec.from_config>`), then
    the targets' arguments (:func:`~pml_regularizers.bench.spec.targets.check_components`, which
    imports the classes the config names).

    Raises
    ------
    ConfigError
        For anything either refuses.
    """
    from .targets import check_components

    spec = RunSpec.from_config(load_config(overrides))
    check_components(spec.models)
    return spec
