"""The arguments of a config's ``_target_`` groups, checked against the classes they name before
anything is built or written: a key the class does not take is refused, naming the closest
argument it does take.

A class's arguments are those of its ``__init__`` and, while an ``__init__`` passes ``**kwargs``
on, those of the classes after it in the method resolution order (PML's losses hand ``reducer``,
``distance`` and the regularizers to their base classes this way); ``torch.nn.Module`` and
``object`` take none. A target that takes ``**kwargs`` without a base class to hand them to (a
function, or a class that hands them to an object it builds) accepts any key. The arguments the
runner fills in itself (:data:`FILLED_IN`) are not the config's to set.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from .run_spec import Component, ModelSpec, closest

__all__ = ["FILLED_IN", "check_components", "target_arguments"]

# What the runner passes to each group's target; the config may not set these.
FILLED_IN: dict[str, frozenset[str]] = {
    "trunk": frozenset({"in_features"}),
    "embedder": frozenset({"in_features", "out_features"}),
    "loss": frozenset(
        {"num_classes", "embedding_size", "weight_regularizer", "weight_reg_weight"}
        | {"embedding_regularizer", "embedding_reg_weight"}
    ),
    "regularizer": frozenset({"embedder", "flow", "loss"}),
    "miner": frozenset(),
    "optimizer": frozenset({"params"}),
    "trainer": frozenset(
        {
            "models",
            "optimizers",
            "batch_size",
            "loss_funcs",
            "mining_funcs",
            "dataset",
            "sampler",
            "dataloader_num_workers",
            "iterations_per_epoch",
            "freeze_trunk_batchnorm",
            "data_device",
            "end_of_iteration_hook",
            "end_of_epoch_hook",
        }
    ),
    "sampler": frozenset({"labels", "batch_size", "length_before_new_iter"}),
}


def target_arguments(target: Any) -> frozenset[str] | None:
    """The keyword arguments ``target`` (a class or function) accepts; None when it accepts any."""
    if not isinstance(target, type):
        function_params = list(inspect.signature(target).parameters.values())
        if any(p.kind is p.VAR_KEYWORD for p in function_params):
            return None
        return frozenset(p.name for p in function_params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    import torch

    names: set[str] = set()
    for cls in target.__mro__:
        if cls in (object, torch.nn.Module) or "__init__" not in vars(cls):
            continue
        params = list(inspect.signature(vars(cls)["__init__"]).parameters.values())[1:]
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return frozenset(names)
    return None  # **kwargs that no base class takes: handed to another object, as DuelingFlowEmbedder does


def check_components(models: ModelSpec) -> None:
    """Import each component's target and check the config's arguments against it.

    Raises
    ------
    ConfigError
        For a target that does not import (naming the group and path), and for an argument the
        target does not take or that the runner fills in (naming the group, the argument and the
        closest argument the target takes).
    """
    for component in models.components():
        _check(component)


def _check(component: Component) -> None:
    from hydra.utils import get_object

    key = f"{component.group}._target_"
    try:
        target = get_object(component.target)
    except Exception as err:  # noqa: BLE001 -- Hydra wraps import errors of any kind
        raise ConfigError(f"{key}: cannot import {component.target} ({type(err).__name__}: {err})") from None
    if not callable(target):
        raise ConfigError(f"{key}: {component.target} is not a class or function")
    accepted = target_arguments(target)
    filled = FILLED_IN.get(component.group, frozenset())
    name = getattr(target, "__name__", component.target)
    for argument in component.arguments:
        if argument in filled:
            raise ConfigError(
                f"{component.group}.{argument} is set by the runner ({component.group}={component.choice}); "
                "remove it from the config"
            )
        if accepted is not None and argument not in accepted:
            valid = sorted(accepted - filled)
            hint = closest(argument, valid, f"{component.group}.")
            raise ConfigError(
                f"{component.group}.{argument}: {name} ({component.group}={component.choice}) takes no argument "
                f"{argument!r}{hint}; its arguments: {', '.join(valid) or 'none'}"
            )
