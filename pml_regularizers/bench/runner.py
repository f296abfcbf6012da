"""Runs one benchmark experiment: seeds x folds, train with a PML trainer, select, test, record.

Protocol ("A Metric Learning Reality Check", Musgrave et al. 2020): classes are sorted and the second
half is the test set. The first half trains, either whole (``cv_folds=0``) or in class-disjoint
folds, each keeping the epoch with the best validation MAP@R. With folds, test metrics are reported
for each fold's embedding ("separated", averaged over folds) and for the folds' L2-normalised
embeddings concatenated ("concatenated").

Everything is resumable: each fold writes an atomic checkpoint after every epoch (keeping the one
before it as a backup) and each seed its result. Running the same command again skips finished work
and continues an interrupted fold from its last epoch, or from the epoch before when the last
checkpoint is damaged. The data order of epoch ``e`` depends only on (seed, fold, e), so a resumed
run follows the same path as an uninterrupted one.

Nothing is written before the run has been checked: the device, the output folder, the data set, the
split (every training fold has at least one batch an epoch, the test set and every validation fold
at least 2 classes with 2 or more images) and the models. The experiment folder is then locked
(:class:`~pml_regularizers.bench.lock.ExperimentLock`) for as long as the run lasts.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import random
import shlex
import shutil
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_metric_learning import testers
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
from pytorch_metric_learning.trainers import TrainWithClassifier
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import distributed as pml_dist
from pytorch_metric_learning.utils import logging_presets
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..embedders import DVMLEmbedder
from ..trainers import DVMLTrainer
from .checkpoints import LoadedCheckpoint, load_checkpoint, read_checkpoint, save_checkpoint
from .config import ConfigError, UserError, experiment_name, wraps_loss
from .data import (
    FeatureDataset,
    FeatureSet,
    FileSet,
    ImageSet,
    NaturalImageDataset,
    TensorImageDataset,
    load_dataset,
    natural_transforms,
)
from .io import atomic_torch_save, atomic_write, write_json
from .loader import auto_num_workers, evaluation_loader, training_loader
from .lock import ExperimentLock
from .metrics import BenchAccuracyCalculator
from .precision import AutocastTrunk, autocast_dtype, use_grad_scaler
from .preflight import (
    check_input,
    check_output_dir,
    check_retrieval_sets,
    check_training_folds,
    split_classes,
    training_sampler,
)

__all__ = ["load_experiment_data", "run_experiment"]

LOGGER = logging.getLogger(__name__)
PRIMARY = "mean_average_precision_at_r"
DataSet = ImageSet | FeatureSet | FileSet  # what a dataset config loads: see load_experiment_data
LATEST, BEST = "checkpoint_latest.pt", "checkpoint_best.pt"


@dataclass(frozen=True)
class _Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here (nothing when not distributed).

        On gloo this is :func:`torch.distributed.monitored_barrier`, not ``barrier``. A gloo
        barrier (like any collective on a tensor made in Python) hands Python objects to gloo's
        worker threads, which free them after the call has returned; when that happens after
        Python has begun to shut down, the process aborts ("terminate called without an active
        exception"). ``monitored_barrier`` hands over none and waits without holding the GIL, so
        gloo can free what earlier collectives left meanwhile; it also names a rank that never
        arrives.
        """
        if self.world == 1:
            return
        if dist.get_backend() == "gloo":
            dist.monitored_barrier()
        else:
            dist.barrier()

    def on_main(self, action: Callable[[], Any]) -> None:
        """Run ``action`` on rank 0 only; a :class:`UserError` it raises is raised on every rank,
        so that no rank waits for a rank 0 that has given up."""
        error = None
        if self.main:
            try:
                action()
            except UserError as err:
                error = err
        if self.world > 1:
            shared = [None if error is None else str(error)]
            dist.broadcast_object_list(shared, src=0)
            if error is None and shared[0] is not None:
                error = UserError(shared[0])
        if error is not None:
            raise error


@dataclass
class _Parts:
    """What one fold trains: models and loss functions under PML's trainer keys, and the miner."""

    models: dict[str, torch.nn.Module]
    loss_funcs: dict[str, torch.nn.Module]
    miner: torch.nn.Module | None


def run_experiment(cfg: DictConfig, evaluate_only: bool = False, command: str | None = None) -> Path:
    """Run (or resume, or re-evaluate) the experiment ``cfg`` describes.

    Started by ``torchrun --nproc_per_node=N``, the run is data-parallel: each process trains on
    its share of every batch (``batch_size`` is the global batch), models are wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, and the loss and miner in PML's
    ``DistributedLossWrapper`` / ``DistributedMinerWrapper``, which gather the embeddings of all
    processes. Rank 0 validates, writes checkpoints, logs and results, and holds the lock on the
    experiment folder.

    Parameters
    ----------
    cfg : DictConfig
        A config from :func:`pml_regularizers.bench.config.load_config`.
    evaluate_only : bool
        Re-test the saved models of every seed and fold without training; fails, before writing
        anything, if a fold has no finished checkpoint.
    command : str, optional
        The command that reproduces this experiment (e.g. ``pml-bench run loss=arcface``), kept in
        ``results.json`` so that reports can show it, and named to a second run that finds the
        folder in use (default: this process's command line).

    Returns
    -------
    Path
        The experiment folder, holding ``config.yaml``, ``results.json`` (with the device that
        finished the experiment, :func:`device_label`) and one ``seed_<s>`` folder per seed
        (record-keeper logs, checkpoints, test embeddings).

    Raises
    ------
    UserError
        Before anything is written, for a run that cannot go as configured (a
        :class:`~pml_regularizers.bench.config.ConfigError` for the config itself: the device,
        the output folder, a split whose metrics would mean nothing or an epoch without a batch);
        for a data set that cannot be read; for a folder that holds a different experiment or is
        in use by another process; for evaluating an experiment that has not finished training;
        and for a checkpoint that cannot be used (the message names the file).
    """
    ddp = _init_distributed(cfg)
    exp_dir = Path(cfg.output_dir).expanduser() / experiment_name(cfg)
    if not evaluate_only and _is_finished(exp_dir, cfg):
        LOGGER.info("%s is finished; not recomputed", exp_dir)
        return exp_dir
    device = _device(cfg.device, ddp)
    check_output_dir(exp_dir)
    check_input(cfg)
    if evaluate_only and not (exp_dir / "config.yaml").is_file():
        raise UserError(
            f"nothing to evaluate: {exp_dir} holds no experiment (no config.yaml); "
            "train it first with pml-bench run and the same overrides"
        )
    data = _load_data(cfg)
    train_classes, test_classes, folds = split_classes(cfg, data.labels)
    check_retrieval_sets(cfg, data.labels, test_classes, folds)
    check_training_folds(cfg, data.labels, folds, ddp.world)
    _build(cfg, data, num_classes=len(train_classes), device=torch.device("cpu"))  # config check
    lock = ExperimentLock(exp_dir, command or shlex.join(sys.argv))
    try:
        ddp.on_main(lambda: _open_experiment(exp_dir, cfg, lock, evaluate_only))
        if evaluate_only:
            ddp.on_main(lambda: _check_trained(exp_dir, cfg, len(folds)))
        records: list[dict] = []
        for seed in range(cfg.seed_offset, cfg.seed_offset + cfg.seeds):
            records += _run_seed(
                cfg, data, folds, test_classes, exp_dir / f"seed_{seed}", seed, device, evaluate_only, ddp
            )
        if ddp.main:
            write_json(
                exp_dir / "results.json",
                {
                    "experiment": experiment_name(cfg),
                    "config": OmegaConf.to_container(cfg),
                    "command": command,
                    "world_size": ddp.world,
                    "device": device_label(device),
                    "records": records,
                },
            )
        ddp.barrier()
    finally:
        lock.release()
    return exp_dir


def _run_seed(
    cfg: DictConfig,
    data: DataSet,
    folds: list[tuple[list[int], list[int]]],
    test_classes: list[int],
    seed_dir: Path,
    seed: int,
    device: torch.device,
    evaluate_only: bool,
    ddp: _Dist,
) -> list[dict]:
    result_path = seed_dir / "result.json"
    if result_path.exists() and not evaluate_only:
        return json.loads(result_path.read_text())["records"]
    test_set = _torch_dataset(data.subset(test_classes), cfg, train=False) if cfg.test else None
    calc = BenchAccuracyCalculator()
    embeddings, labels, val_scores = [], None, []
    for fold, (tr, va) in enumerate(folds):
        fold_dir = seed_dir / f"fold_{fold}"
        val_set = _torch_dataset(data.subset(va), cfg, train=False) if va else None
        models, best_score = _train_fold(cfg, data, data.subset(tr), val_set, fold_dir, seed, fold, device, ddp)
        val_scores.append(best_score)
        if test_set is not None and ddp.main:
            emb, labels = _embed(models, test_set, cfg, device)
            embeddings.append(emb)
    records = []
    final = torch.cat(embeddings, 1) if embeddings else None
    if cfg.cv_folds:
        records.append(_record(seed, "val", "separated", {PRIMARY: float(np.mean(val_scores))}))
    if len(embeddings) == 1:
        records.append(_record(seed, "test", "single", calc.get_accuracy(embeddings[0], labels)))
    elif embeddings:
        per_fold = [calc.get_accuracy(e, labels) for e in embeddings]
        separated = {k: float(np.mean([m[k] for m in per_fold])) for k in per_fold[0]}
        records.append(_record(seed, "test", "separated", separated))
        records.append(_record(seed, "test", "concatenated", calc.get_accuracy(final, labels)))
    if ddp.main:
        if final is not None and cfg.save_test_embeddings:
            atomic_torch_save({"embeddings": final, "labels": labels}, seed_dir / "test_embeddings.pt")
        write_json(result_path, {"seed": seed, "records": records})
    ddp.barrier()
    return records


def _record(seed: int, split: str, embedding: str, metrics: dict) -> dict:
    return {
        "seed": seed,
        "split": split,
        "embedding": embedding,
        "metrics": {k: float(v) for k, v in metrics.items()},
    }


def _train_fold(
    cfg: DictConfig,
    data: DataSet,
    train_subset: DataSet,
    val_set: torch.utils.data.Dataset | None,
    fold_dir: Path,
    seed: int,
    fold: int,
    device: torch.device,
    ddp: _Dist,
) -> tuple[dict[str, torch.nn.Module], float]:
    """Train one fold from scratch or from its latest checkpoint (nothing when it has finished,
    which is all that ``evaluate`` finds: :func:`_check_trained`).

    Returns the models (the best validation epoch's, when there is a validation set) and the
    best validation MAP@R (nan without validation).
    """
    _reseed(seed, fold, 0)
    parts = _build(cfg, data, train_subset.num_classes, device)
    optimizers = _optimizers(cfg, parts)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    # the gradient scaler's state is saved and restored with the optimizers'
    resumable = {**optimizers, "grad_scaler": scaler} if scaler is not None else optimizers
    latest, best = fold_dir / LATEST, fold_dir / BEST
    state = _load_fold_checkpoint(latest, parts, resumable, device, seed, fold) or {
        "epoch": 0, "best_epoch": 0, "best_score": -math.inf, "done": False
    }
    if not state["done"]:
        _fit(cfg, parts, optimizers, scaler, train_subset, val_set, fold_dir, seed, fold, device, state, ddp)
    ddp.barrier()
    if val_set is not None and best.exists():
        _load_fold_checkpoint(best, parts, None, device, seed, fold, best_epoch=state["best_epoch"])
    score = float(state["best_score"]) if val_set is not None else math.nan
    return parts.models, score


def _fit(
    cfg: DictConfig,
    parts: _Parts,
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None,
    train_subset: DataSet,
    val_set: torch.utils.data.Dataset | None,
    fold_dir: Path,
    seed: int,
    fold: int,
    device: torch.device,
    state: dict,
    ddp: _Dist,
) -> None:
    train_set = _torch_dataset(train_subset, cfg, train=True)
    record_keeper = hooks = None
    if ddp.main:
        record_keeper, _, _ = logging_presets.get_record_keeper(
            str(fold_dir / "logs"), str(fold_dir / "tensorboard")
        )
        if record_keeper is None:
            raise RuntimeError("record-keeper logging needs the tensorboard package")
        hooks = logging_presets.get_hook_container(record_keeper, primary_metric=PRIMARY)
    batch_size = cfg.batch_size // ddp.world
    sampler = training_sampler(cfg, train_set.labels, batch_size, ddp.world, ddp.rank, seed)
    models, loss_funcs, miner = _distribute(parts, ddp, device)
    models["trunk"] = _trunk_runner(models["trunk"], cfg, device)
    num_workers = _num_workers(cfg, train_set, ddp.world)
    trainer = instantiate(
        cfg.trainer,
        models=models,
        optimizers=optimizers,
        batch_size=batch_size,
        loss_funcs=loss_funcs,
        mining_funcs={"tuple_miner": miner} if miner is not None else {},
        dataset=train_set,
        sampler=sampler,
        dataloader_num_workers=num_workers,
        iterations_per_epoch=cfg.iterations_per_epoch,
        freeze_trunk_batchnorm=cfg.freeze_trunk_bn,
        data_device=device,
        end_of_iteration_hook=hooks.end_of_iteration_hook if hooks else None,
        _convert_="object",
    )
    if scaler is not None:
        use_grad_scaler(trainer, scaler)
    if isinstance(train_set, NaturalImageDataset):
        _keep_loader(trainer, training_loader(
            train_set, batch_size, sampler, num_workers, pin_memory=device.type == "cuda",
            persistent_workers=True,
        ))
    resumable = {**optimizers, "grad_scaler": scaler} if scaler is not None else optimizers
    eval_trunk = _trunk_runner(parts.models["trunk"], cfg, device)
    tester = None
    if val_set is not None and ddp.main:
        tester = testers.GlobalEmbeddingSpaceTester(
            accuracy_calculator=BenchAccuracyCalculator(include=(PRIMARY,)),
            end_of_testing_hook=hooks.end_of_testing_hook,
            dataloader_num_workers=_num_workers(cfg, val_set, 1),
        )
    latest, best = fold_dir / LATEST, fold_dir / BEST
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        _reseed(seed, fold, epoch, ddp.rank)
        if isinstance(sampler, torch.utils.data.DistributedSampler):
            sampler.set_epoch(epoch)
        trainer.train(start_epoch=epoch, num_epochs=epoch)
        if tester is not None:
            acc = tester.test({"val": val_set}, epoch, eval_trunk, parts.models["embedder"])
            score = float(acc["val"][f"{PRIMARY}_level0"])
            if score > state["best_score"]:
                state.update(best_epoch=epoch, best_score=score)
                _save_checkpoint(best, parts, None, state, keep_previous=False)
        state["epoch"] = epoch
        stop = cfg.patience is not None and epoch - state["best_epoch"] >= cfg.patience
        state["done"] = stop or epoch == cfg.epochs
        if ddp.world > 1:  # only rank 0 validates: every rank stops when rank 0 does
            shared = [state]
            dist.broadcast_object_list(shared, src=0)
            state.update(shared[0])
        if ddp.main:
            record_keeper.save_records()
            _save_checkpoint(latest, parts, resumable, state, keep_previous=True)
        if state["done"]:
            break


def _distribute(
    parts: _Parts, ddp: _Dist, device: torch.device
) -> tuple[dict[str, torch.nn.Module], dict[str, torch.nn.Module], torch.nn.Module | None]:
    """Wrap models, metric loss and miner for a torchrun job; unchanged on one process.

    Models with trainable parameters go into DistributedDataParallel (which broadcasts rank 0's
    weights). PML's ``DistributedLossWrapper`` computes the loss on the embeddings of all ranks
    and multiplies it by the world size so that DDP's gradient average is the gradient of the
    global batch; the loss's own parameters (proxies, class weights) see that same multiplied
    loss on every rank, so their gradient is divided by the world size here, and they start from
    rank 0's values.
    """
    if ddp.world == 1:
        return parts.models, parts.loss_funcs, parts.miner
    ids = [device.index] if device.type == "cuda" else None
    models = {
        k: DistributedDataParallel(m, device_ids=ids) if _trainable(m) else m
        for k, m in parts.models.items()
    }
    loss_funcs = dict(parts.loss_funcs)
    metric_loss = loss_funcs["metric_loss"]
    for tensor in [*metric_loss.parameters(), *metric_loss.buffers()]:
        dist.broadcast(tensor.data, src=0)
    for p in metric_loss.parameters():
        p.register_hook(lambda g: g / ddp.world)
    loss_funcs["metric_loss"] = pml_dist.DistributedLossWrapper(metric_loss)
    miner = pml_dist.DistributedMinerWrapper(parts.miner) if parts.miner is not None else None
    return models, loss_funcs, miner


def _trainable(module: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _build(
    cfg: DictConfig, data: DataSet, num_classes: int, device: torch.device
) -> _Parts:
    """Instantiate the models, the loss (with its regularizer) and the miner from the config."""
    try:
        if isinstance(data, FeatureSet):
            trunk = instantiate(cfg.trunk, in_features=data.features.shape[1])
        else:
            trunk = instantiate(cfg.trunk)
        embedder = instantiate(
            cfg.embedder, in_features=trunk.output_size, out_features=cfg.embedding_size
        )
        emb_size = getattr(embedder, "out_features", None) or trunk.output_size
        loss = _build_loss(cfg, num_classes, emb_size, embedder)
        miner = instantiate(cfg.miner) if cfg.miner.get("_target_") else None
        trainer_cls = get_class(cfg.trainer._target_)
    except ConfigError:
        raise
    except Exception as err:  # instantiate wraps import and argument errors
        raise ConfigError(f"could not build the models from the config: {err}") from err
    if issubclass(trainer_cls, DVMLTrainer) and not isinstance(embedder, DVMLEmbedder):
        raise ConfigError(f"trainer={cfg.choices.trainer} needs embedder=dvml, got embedder={cfg.choices.embedder}")
    parts = _Parts({"trunk": trunk, "embedder": embedder}, {"metric_loss": loss}, miner)
    if issubclass(trainer_cls, TrainWithClassifier):
        parts.models["classifier"] = torch.nn.Linear(emb_size, num_classes)
        parts.loss_funcs["classifier_loss"] = torch.nn.CrossEntropyLoss()
    for m in [*parts.models.values(), *parts.loss_funcs.values()]:
        m.to(device)
    if _channels_last(cfg, device) and not isinstance(data, FeatureSet):
        trunk.to(memory_format=torch.channels_last)
    return parts


def _build_loss(
    cfg: DictConfig, num_classes: int, embedding_size: int, embedder: torch.nn.Module
) -> torch.nn.Module:
    """The metric loss with its regularizer; a regularizer that takes ``flow`` gets the embedder.

    A "regularizer" that is itself a PML loss (:class:`~pml_regularizers.JacobianDeterminantLoss`)
    wraps the metric loss instead, and gets the embedder as ``embedder``.
    """
    loss_cls = get_class(cfg.loss._target_)
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
        if "flow" in inspect.signature(get_class(reg_cfg._target_).__init__).parameters:
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


def _optimizers(cfg: DictConfig, parts: _Parts) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per model with parameters (``<name>_optimizer``, PML's naming), and one for
    the metric loss's own parameters at ``optimizer.loss_lr``."""
    opt_cfg = {k: v for k, v in cfg.optimizer.items() if k != "loss_lr"}
    out = {
        f"{name}_optimizer": instantiate(opt_cfg, params=list(m.parameters()))
        for name, m in parts.models.items()
        if _trainable(m)
    }
    loss_params = list(parts.loss_funcs["metric_loss"].parameters())
    if loss_params:
        out["metric_loss_optimizer"] = instantiate(opt_cfg, params=loss_params, lr=cfg.optimizer.loss_lr)
    return out


def load_experiment_data(cfg: DictConfig) -> DataSet:
    """The whole data set an experiment's config names, read as :func:`run_experiment` reads it.

    Parameters
    ----------
    cfg
        A composed config (:func:`~pml_regularizers.bench.config.load_config`) or an experiment
        folder's saved ``config.yaml``; only its ``dataset`` group is read.

    Returns
    -------
    ImageSet, FeatureSet or FileSet
        All classes, before the class-disjoint split; ``~`` in ``root`` and ``cache_dir`` is
        expanded. A FileSet (the paths of the images) for ``pipeline: natural``; configs saved
        before the key existed read as ``grayscale``, as they ran.
    """
    d = cfg.dataset
    root = None if d.root is None else str(Path(d.root).expanduser())
    return load_dataset(
        d.name,
        root=root,
        size=d.size,
        cache_dir=str(Path(d.cache_dir).expanduser()),
        pipeline=d.get("pipeline", "grayscale"),
        **OmegaConf.to_container(d.options),
    )


def _torch_dataset(subset: DataSet, cfg: DictConfig, train: bool) -> torch.utils.data.Dataset:
    """The torch dataset a split of ``subset`` is served by: augmented for training when the
    dataset config says so, with the transforms of its pipeline."""
    augment = train and bool(cfg.dataset.augment)
    if isinstance(subset, FeatureSet):
        return FeatureDataset(subset)
    if isinstance(subset, FileSet):
        d = cfg.dataset
        transform = natural_transforms(augment, crop=d.size, resize=d.resize, mean=tuple(d.mean), std=tuple(d.std))
        return NaturalImageDataset(subset, transform)
    return TensorImageDataset(subset, augment=augment, fill=cfg.dataset.fill)


def _keep_loader(trainer: Any, loader: torch.utils.data.DataLoader) -> None:
    """Make a PML trainer train from ``loader`` in every ``train()`` call.

    PML's trainers build a new DataLoader at each ``train()``, which the runner calls once an
    epoch; keeping one lets its workers persist between epochs (and pin memory), while the
    loader's :class:`~pml_regularizers.bench.loader.SeededSampler` still draws each epoch's order
    and augmentation from the generator the runner reseeds per (seed, fold, epoch).
    """

    def initialize_dataloader() -> None:
        trainer.dataloader = loader
        if not trainer.iterations_per_epoch:
            trainer.iterations_per_epoch = len(loader)
        trainer.dataloader_iter = iter(loader)

    trainer.initialize_dataloader = initialize_dataloader


@torch.no_grad()
def _embed(
    models: dict[str, torch.nn.Module],
    dataset: torch.utils.data.Dataset,
    cfg: DictConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    for m in models.values():
        m.eval()
    trunk = _trunk_runner(models["trunk"], cfg, device)
    loader = evaluation_loader(dataset, 256, _num_workers(cfg, dataset, 1), pin_memory=device.type == "cuda")
    out, labels = [], []
    for x, y in loader:
        out.append(models["embedder"](trunk(x.to(device))).cpu())
        labels.append(y)
    return torch.nn.functional.normalize(torch.cat(out), dim=1), torch.cat(labels)


def _trunk_runner(trunk: torch.nn.Module, cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    """``trunk`` as training and testing call it: under autocast for ``precision: bf16|fp16``
    and on channels-last input when :func:`_channels_last` (:class:`AutocastTrunk`), else as is."""
    dtype = autocast_dtype(cfg.precision)
    channels_last = _channels_last(cfg, device)
    if dtype is None and not channels_last:
        return trunk
    return AutocastTrunk(trunk, device.type, dtype, channels_last)


def _channels_last(cfg: DictConfig, device: torch.device) -> bool:
    """``channels_last``, with ``auto`` meaning on CUDA (where convolutions gain from it)."""
    return device.type == "cuda" if cfg.channels_last == "auto" else bool(cfg.channels_last)


def _num_workers(cfg: DictConfig, dataset: torch.utils.data.Dataset, world: int) -> int:
    """``num_workers``, with ``auto`` meaning none for data held in memory as tensors (a worker
    would only copy them)."""
    if cfg.num_workers != "auto":
        return int(cfg.num_workers)
    return 0 if isinstance(dataset, (TensorImageDataset, FeatureDataset)) else auto_num_workers(world)


def _reseed(seed: int, fold: int, epoch: int, rank: int = 0) -> None:
    """Seed every RNG the trainer, sampler and augmentation use from (seed, fold, epoch, rank)."""
    s = (seed * 1_000_003 + fold * 10_007 + epoch + rank * 7_919) % (2**31)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)
    c_f.NUMPY_RANDOM.seed(s)  # PML's samplers draw from this module-level generator


def device_label(device: torch.device) -> str:
    """What ran an experiment, as ``results.json`` records it: ``"cpu"``, or ``"cuda: <GPU name>"``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def _device(spec: str, ddp: _Dist) -> torch.device:
    """The device ``spec`` names, checked to be usable here; under torchrun, this process's GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {spec!r}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={spec}: MPS is not available here; use device=cpu or device=auto")
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        build = "has no CUDA support" if torch.version.cuda is None else "finds no GPU"
        raise ConfigError(
            f"device={spec}: CUDA is not available here (torch {torch.__version__} {build}); "
            "use device=cpu or device=auto"
        )
    if ddp.world > 1:
        device = torch.device("cuda", ddp.local_rank)
    if (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={spec}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
        )
    return device


def _init_distributed(cfg: DictConfig) -> _Dist:
    """Join the torchrun job described by the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist()
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch_size must be divisible by the number of processes ({world}), got {cfg.batch_size}"
        )
    if not dist.is_initialized():
        cuda = cfg.device != "cpu" and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _Dist(rank=dist.get_rank(), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _load_data(cfg: DictConfig) -> DataSet:
    """:func:`load_experiment_data`, with a data set that cannot be read reported as a
    :class:`UserError` (a missing root, one of the wrong kind, malformed files, bad options)."""
    try:
        return load_experiment_data(cfg)
    except (OSError, ValueError) as err:
        raise UserError(f"dataset={cfg.choices.dataset}: {err}") from err


# The experiment folder ------------------------------------------------------------------------


def _is_finished(exp_dir: Path, cfg: DictConfig) -> bool:
    """Whether ``exp_dir`` holds the results of this very config."""
    config = exp_dir / "config.yaml"
    return (
        (exp_dir / "results.json").exists()
        and config.is_file()
        and config.read_text() == OmegaConf.to_yaml(cfg)
    )


def _open_experiment(exp_dir: Path, cfg: DictConfig, lock: ExperimentLock, evaluate_only: bool) -> None:
    """Lock ``exp_dir`` (creating it), then claim it for ``cfg`` (:func:`_claim_folder`)."""
    lock.acquire()
    _claim_folder(exp_dir, cfg, evaluate_only)


def _claim_folder(exp_dir: Path, cfg: DictConfig, evaluate_only: bool) -> None:
    """Write ``config.yaml``, or check the one there.

    A folder of a different config is refused when it holds finished work; one without
    (:func:`_has_finished_work`) is what a failed start left behind: ``evaluate`` finds nothing
    to evaluate there, and ``run`` takes it over (its ``seed_*`` folders are removed and its
    config replaced).
    """
    path = exp_dir / "config.yaml"
    text = OmegaConf.to_yaml(cfg)
    if path.exists():
        if path.read_text() == text:
            return
        old = OmegaConf.to_container(OmegaConf.load(path))
        diff = ", ".join(sorted(_diff_keys(old, OmegaConf.to_container(cfg))))
        finished = _has_finished_work(exp_dir)
        if finished:
            raise ConfigError(
                f"{exp_dir} holds a run of a different config (differs at: {diff}); "
                "choose another experiment= or output_dir="
            )
        if evaluate_only:
            raise UserError(
                f"nothing to evaluate: {exp_dir} holds no finished epoch (a failed start of a "
                f"different config, differing at: {diff}); train it first with pml-bench run"
            )
        LOGGER.warning(
            "taking over %s: its config.yaml differs at: %s, but it holds no finished epoch", exp_dir, diff
        )
        for seed_dir in exp_dir.glob("seed_*"):
            shutil.rmtree(seed_dir)
    atomic_write(path, lambda f: f.write(text.encode()))


def _has_finished_work(exp_dir: Path) -> bool:
    """Whether ``exp_dir`` holds results or a checkpoint that can be read."""
    if (exp_dir / "results.json").exists() or any(exp_dir.glob("seed_*/result.json")):
        return True
    for path in exp_dir.glob("seed_*/fold_*/checkpoint_*.pt"):
        try:
            read_checkpoint(path)
        except UserError:
            continue
        return True
    return False


def _check_trained(exp_dir: Path, cfg: DictConfig, num_folds: int) -> None:
    """Refuse to evaluate unless every fold of every seed has finished training, with usable
    checkpoints."""
    for seed in range(cfg.seed_offset, cfg.seed_offset + cfg.seeds):
        for fold in range(num_folds):
            fold_dir = exp_dir / f"seed_{seed}" / f"fold_{fold}"
            latest = _fold_checkpoint(fold_dir / LATEST, lambda payload: None, seed, fold)
            if latest is None:
                raise UserError(f"{fold_dir} has no saved model (no {LATEST}); train it first with pml-bench run")
            state = latest.payload["state"]
            if not state["done"]:
                lost = f"; {latest.problem}" if latest.problem else ""
                raise UserError(
                    f"{fold_dir} has not finished training (epoch {state['epoch']} of {cfg.epochs}){lost}; "
                    "finish it first with pml-bench run and the same overrides"
                )
            best = fold_dir / BEST
            if cfg.cv_folds and best.exists():
                _fold_checkpoint(best, _best_epoch_check(best, state["best_epoch"]), seed, fold)


# Checkpoints ----------------------------------------------------------------------------------


def _save_checkpoint(
    path: Path,
    parts: _Parts,
    optimizers: dict[str, torch.optim.Optimizer] | None,
    state: dict,
    keep_previous: bool,
) -> None:
    payload = {
        "models": {k: m.state_dict() for k, m in parts.models.items()},
        "loss": parts.loss_funcs["metric_loss"].state_dict(),
        "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
        "state": dict(state),
    }
    save_checkpoint(payload, path, keep_previous)


def _load_fold_checkpoint(
    path: Path,
    parts: _Parts,
    optimizers: dict[str, torch.optim.Optimizer] | None,
    device: torch.device,
    seed: int,
    fold: int,
    best_epoch: int | None = None,
) -> dict | None:
    """Load the checkpoint ``path`` (or its backup, with a warning) into the models, loss and
    optimizers; return its state, or None when there is none.

    ``best_epoch``, for ``checkpoint_best.pt``, is the epoch the latest checkpoint names as the
    best, which the file must hold.
    """
    def apply(payload: dict) -> None:
        if best_epoch is not None:
            _best_epoch_check(path, best_epoch)(payload)
        _apply_checkpoint(payload, path, parts, optimizers)

    loaded = _fold_checkpoint(path, apply, seed, fold, device)
    if loaded is None:
        return None
    if loaded.problem:
        LOGGER.warning(
            "%s; resuming from %s (epoch %d)", loaded.problem, loaded.path.name, loaded.payload["state"]["epoch"]
        )
    return loaded.payload["state"]


def _fold_checkpoint(
    path: Path, apply: Callable[[dict], Any], seed: int, fold: int, device: torch.device | str = "cpu"
) -> LoadedCheckpoint | None:
    """:func:`~pml_regularizers.bench.checkpoints.load_checkpoint`, with what to do when neither
    the file nor its backup can be used added to the message."""
    try:
        return load_checkpoint(path, apply, device)
    except UserError as err:
        raise UserError(f"{err}; delete {path.parent} to train fold {fold} of seed {seed} again") from err


def _best_epoch_check(path: Path, best_epoch: int) -> Callable[[dict], None]:
    """A check that a best-epoch checkpoint holds the epoch ``best_epoch``."""
    def check(payload: dict) -> None:
        if payload["state"]["best_epoch"] != best_epoch:
            raise UserError(
                f"{path} holds epoch {payload['state']['best_epoch']}, not the best epoch "
                f"{best_epoch} that {LATEST} names"
            )

    return check


def _apply_checkpoint(
    payload: dict, path: Path, parts: _Parts, optimizers: dict[str, torch.optim.Optimizer] | None
) -> None:
    """Load a checkpoint's contents into the models, the metric loss and the optimizers."""
    try:
        for k, m in parts.models.items():
            m.load_state_dict(payload["models"][k])
        parts.loss_funcs["metric_loss"].load_state_dict(payload["loss"])
        for k, o in (optimizers or {}).items():
            o.load_state_dict(payload["optimizers"][k])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = f"no {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
        raise UserError(
            f"{path} does not match this experiment's models ({textwrap.shorten(detail, 200)})"
        ) from err
