"""What a benchmark config builds: the trunk and embedder (:func:`build_models`), everything one
fold trains (:func:`build_parts`: models, the loss with its regularizer, the miner) and its
optimizers (:func:`build_optimization`)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
from pytorch_metric_learning.trainers import TrainWithClassifier

from ...embedders import DVMLEmbedder
from ...trainers import DVMLTrainer
from ..data import FeatureSet
from ..data.serve import DataSet
from ..errors import ConfigError
from ..spec.compose import wraps_loss
from .precision import uses_channels_last

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


def build_models(cfg: DictConfig, data: DataSet) -> dict[str, torch.nn.Module]:
    """The trunk and the embedder ``cfg`` names, newly initialised, on the CPU.

    Parameters
    ----------
    cfg : DictConfig
        A composed config or an experiment folder's ``config.yaml``.
    data : ImageSet, FeatureSet or FileSet
        The experiment's data (:func:`~pml_regularizers.bench.protocol.runner.load_experiment_data`):
        a feature trunk takes its width from it.

    Returns
    -------
    dict
        ``{"trunk": ..., "embedder": ...}``, as the runner builds them (before any other part, so
        with the same random initialisation).

    Raises
    ------
    ConfigError
        When the config's classes cannot be built.
    """
    with _config_errors():
        trunk, embedder = _instantiate_models(cfg, data)
    return {"trunk": trunk, "embedder": embedder}


def build_parts(cfg: DictConfig, data: DataSet, num_classes: int, device: torch.device) -> Parts:
    """Instantiate the models, the loss (with its regularizer) and the miner from the config."""
    with _config_errors():
        trunk, embedder = _instantiate_models(cfg, data)
        emb_size: int = getattr(embedder, "out_features", None) or cast(int, trunk.output_size)
        loss = build_loss(cfg, num_classes, emb_size, embedder)
        miner = instantiate(cfg.miner) if cfg.miner.get("_target_") else None
        trainer_cls = get_class(cfg.trainer._target_)
    if issubclass(trainer_cls, DVMLTrainer) and not isinstance(embedder, DVMLEmbedder):
        raise ConfigError(f"trainer={cfg.choices.trainer} needs embedder=dvml, got embedder={cfg.choices.embedder}")
    parts = Parts({"trunk": trunk, "embedder": embedder}, {"metric_loss": loss}, miner)
    if issubclass(trainer_cls, TrainWithClassifier):
        parts.models["classifier"] = torch.nn.Linear(emb_size, num_classes)
        parts.loss_funcs["classifier_loss"] = torch.nn.CrossEntropyLoss()
    for m in [*parts.models.values(), *parts.loss_funcs.values()]:
        m.to(device)
    if uses_channels_last(cfg, device) and not isinstance(data, FeatureSet):
        trunk.to(memory_format=torch.channels_last)
    return parts


@contextmanager
def _config_errors() -> Iterator[None]:
    """Report what building from the config raises as a :class:`ConfigError` (instantiate wraps
    import and argument errors of any kind)."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"could not build the models from the config: {err}") from err


def _instantiate_models(cfg: DictConfig, data: DataSet) -> tuple[torch.nn.Module, torch.nn.Module]:
    if isinstance(data, FeatureSet):
        trunk = instantiate(cfg.trunk, in_features=data.features.shape[1])
    else:
        trunk = instantiate(cfg.trunk)
    embedder = instantiate(cfg.embedder, in_features=trunk.output_size, out_features=cfg.embedding_size)
    return trunk, embedder


def build_loss(cfg: DictConfig, num_classes: int, embedding_size: int, embedder: torch.nn.Module) -> torch.nn.Module:
    """The metric loss with its regularizer; a regularizer that takes ``flow`` gets the embedder.

    A "regularizer" that is itself a PML loss (:class:`~pml_regularizers.JacobianDeterminantLoss`)
    wraps the metric loss instead, and gets the embedder as ``embedder``.
    """
    loss_cls: type[Any] = get_class(cfg.loss._target_)
    params = inspect.signature(loss_cls.__init__).parameters
    extra: dict[str, Any] = {}
    if "num_classes" in params:
        extra["num_classes"] = num_classes
    if "embedding_size" in params:
        extra["embedding_size"] = embedding_size
    reg_cfg = cfg.regularizer
    if wraps_loss(reg_cfg):
        return instantiate(reg_cfg, loss=instantiate(cfg.loss, **extra), embedder=embedder)
    if reg_cfg.get("_target_"):
        kwargs = {k: v for k, v in reg_cfg.items() if k not in ("weight", "attach")}
        reg_cls: type[Any] = get_class(reg_cfg._target_)
        if "flow" in inspect.signature(reg_cls.__init__).parameters:
            kwargs["flow"] = embedder
        regularizer = instantiate(kwargs)
        if reg_cfg.attach == "weight":
            if not issubclass(loss_cls, WeightRegularizerMixin):
                raise ConfigError(
                    f"regularizer.attach=weight needs a loss with class weights or proxies "
                    f"(ArcFace, CosFace, ProxyAnchor, ...); {loss_cls.__name__} has none: "
                    "use regularizer.attach=embedding"
                )
            extra.update(weight_regularizer=regularizer, weight_reg_weight=reg_cfg.weight)
        else:
            extra.update(embedding_regularizer=regularizer, embedding_reg_weight=reg_cfg.weight)
    return instantiate(cfg.loss, **extra)


def build_optimization(cfg: DictConfig, parts: Parts, device: torch.device) -> Optimization:
    """One optimizer per model with parameters (``<name>_optimizer``, PML's naming), one for the
    metric loss's own parameters at ``optimizer.loss_lr``, and a gradient scaler for
    ``precision: fp16``."""
    opt_cfg = {k: v for k, v in cfg.optimizer.items() if k != "loss_lr"}
    optimizers = {
        f"{name}_optimizer": instantiate(opt_cfg, params=list(m.parameters()))
        for name, m in parts.models.items()
        if trainable(m)
    }
    loss_params = list(parts.loss_funcs["metric_loss"].parameters())
    if loss_params:
        optimizers["metric_loss_optimizer"] = instantiate(opt_cfg, params=loss_params, lr=cfg.optimizer.loss_lr)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    return Optimization(optimizers, scaler)


def trainable(module: torch.nn.Module) -> bool:
    """Whether ``module`` has a parameter that takes gradients."""
    return any(p.requires_grad for p in module.parameters())
