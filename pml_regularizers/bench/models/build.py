"""What a run's model spec builds: the trunk and embedder (:func:`build_models`), everything one
fold trains (:func:`build_parts`: models, the loss with its regularizer, the miner) and its
optimizers (:func:`build_optimization`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from hydra.utils import get_object
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
from pytorch_metric_learning.trainers import TrainWithClassifier

from ...embedders import DVMLEmbedder
from ...trainers import DVMLTrainer
from ..data import FeatureSet
from ..data.serve import DataSet
from ..errors import ConfigError
from ..spec.run_spec import ModelSpec
from ..spec.targets import target_arguments

__all__ = ["Optimization", "Parts", "build_loss", "build_models", "build_optimization", "build_parts", "trainable"]


@dataclass
class Parts:
    """What one fold trains: models and loss functions under PML's trainer keys, and the miner."""

    models: dict[str, torch.nn.Module]
    loss_funcs: dict[str, torch.nn.Module]
    miner: torch.nn.Module | None


@dataclass(frozen=True)
class Optimization:
    """The optimizers of one fold, under PML's trainer keys, and the gradient scaler of an
    ``fp16`` run (None otherwise)."""

    optimizers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler | None

    @property
    def resumable(self) -> dict[str, Any]:
        """What a checkpoint saves and restores besides the models: the optimizers, and the
        gradient scaler (whose state is saved and restored with theirs)."""
        if self.scaler is None:
            return self.optimizers
        return {**self.optimizers, "grad_scaler": self.scaler}


def build_models(models: ModelSpec, data: DataSet) -> dict[str, torch.nn.Module]:
    """The trunk and the embedder ``models`` names, newly initialised, on the CPU.

    Parameters
    ----------
    models : ModelSpec
        The model part of a run's spec (a composed config's or an experiment folder's).
    data : ImageSet, FeatureSet or FileSet
        The experiment's data (:func:`~pml_regularizers.bench.data.serve.load_experiment_data`):
        a feature trunk takes its width from it.

    Returns
    -------
    dict
        ``{"trunk": ..., "embedder": ...}``, as the runner builds them (before any other part, so
        with the same random initialisation).

    Raises
    ------
    ConfigError
        When the spec's classes cannot be built.
    """
    with _config_errors():
        trunk, embedder = _instantiate_models(models, data)
    return {"trunk": trunk, "embedder": embedder}


def build_parts(
    models: ModelSpec, data: DataSet, num_classes: int, device: torch.device, channels_last: bool = False
) -> Parts:
    """Build the models, the loss (with its regularizer) and the miner of ``models`` for a fold of
    ``num_classes`` training classes, on ``device`` (the trunk in the channels-last memory format
    when ``channels_last`` and the data are images)."""
    with _config_errors():
        trunk, embedder = _instantiate_models(models, data)
        emb_size: int = getattr(embedder, "out_features", None) or cast(int, trunk.output_size)
        loss = build_loss(models, num_classes, emb_size, embedder)
        miner = models.miner.build() if models.miner is not None else None
        trainer_cls = get_object(models.trainer.target)
    if issubclass(trainer_cls, DVMLTrainer) and not isinstance(embedder, DVMLEmbedder):
        raise ConfigError(f"trainer={models.trainer.choice} needs embedder=dvml, got embedder={models.embedder.choice}")
    parts = Parts({"trunk": trunk, "embedder": embedder}, {"metric_loss": loss}, miner)
    if issubclass(trainer_cls, TrainWithClassifier):
        parts.models["classifier"] = torch.nn.Linear(emb_size, num_classes)
        parts.loss_funcs["classifier_loss"] = torch.nn.CrossEntropyLoss()
    for m in [*parts.models.values(), *parts.loss_funcs.values()]:
        m.to(device)
    if channels_last and not isinstance(data, FeatureSet):
        trunk.to(memory_format=torch.channels_last)
    return parts


@contextmanager
def _config_errors() -> Iterator[None]:
    """Report what building from the spec raises as a :class:`ConfigError` (instantiate wraps
    import and argument errors of any kind)."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"could not build the models from the config: {err}") from err


def _instantiate_models(models: ModelSpec, data: DataSet) -> tuple[torch.nn.Module, torch.nn.Module]:
    if isinstance(data, FeatureSet):
        trunk = models.trunk.build(in_features=data.features.shape[1])
    else:
        trunk = models.trunk.build()
    embedder = models.embedder.build(in_features=trunk.output_size, out_features=models.embedding_size)
    return trunk, embedder


def build_loss(models: ModelSpec, num_classes: int, embedding_size: int, embedder: torch.nn.Module) -> torch.nn.Module:
    """The metric loss with its regularizer.

    The loss gets ``num_classes`` and ``embedding_size`` when it takes them. The regularizer is
    attached as ``regularizer.attach`` says: the loss's ``weight_regularizer`` or
    ``embedding_regularizer`` (with ``regularizer.weight``; a regularizer that takes ``embedder``,
    such as :class:`~pml_regularizers.JacobianDeterminantRegularizer`, gets the run's embedder),
    or, with ``wrap``, a loss that wraps the metric loss and gets the embedder
    (:class:`~pml_regularizers.JacobianDeterminantLoss`).
    """
    accepted = target_arguments(get_object(models.loss.target))
    extra: dict[str, Any] = {}
    for name, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if accepted is None or name in accepted:
            extra[name] = value
    reg = models.regularizer
    if reg is None:
        return models.loss.build(**extra)
    if reg.attach == "wrap":
        return reg.component.build(loss=models.loss.build(**extra), embedder=embedder)
    reg_arguments = target_arguments(get_object(reg.component.target))
    regularizer = reg.component.build(
        **({"embedder": embedder} if reg_arguments and "embedder" in reg_arguments else {})
    )
    if reg.attach == "weight":
        loss_cls = get_object(models.loss.target)
        if not issubclass(loss_cls, WeightRegularizerMixin):
            raise ConfigError(
                f"regularizer.attach=weight needs a loss with class weights or proxies "
                f"(ArcFace, CosFace, ProxyAnchor, ...); {loss_cls.__name__} has none: "
                "use regularizer.attach=embedding"
            )
        extra.update(weight_regularizer=regularizer, weight_reg_weight=reg.weight)
    else:
        extra.update(embedding_regularizer=regularizer, embedding_reg_weight=reg.weight)
    return models.loss.build(**extra)


def build_optimization(models: ModelSpec, parts: Parts, device: torch.device, precision: str) -> Optimization:
    """One optimizer per model with parameters (``<name>_optimizer``, PML's naming), one for the
    metric loss's own parameters at ``optimizer.loss_lr``, and a gradient scaler for
    ``precision`` ``fp16``."""
    optimizer = models.optimizer.component
    optimizers = {
        f"{name}_optimizer": optimizer.build(params=list(m.parameters()))
        for name, m in parts.models.items()
        if trainable(m)
    }
    loss_params = list(parts.loss_funcs["metric_loss"].parameters())
    if loss_params:
        optimizers["metric_loss_optimizer"] = optimizer.build(params=loss_params, lr=models.optimizer.loss_lr)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return Optimization(optimizers, scaler)


def trainable(module: torch.nn.Module) -> bool:
    """Whether ``module`` has a parameter that takes gradients."""
    return any(p.requires_grad for p in module.parameters())
