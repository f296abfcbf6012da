"""Runs one benchmark experiment: seeds x folds, train with a PML trainer, select, test, record.

Protocol ("A Metric Learning Reality Check", Musgrave et al. 2020): classes are sorted and the second
half is the test set. The first half trains, either whole (``cv_folds=0``) or in class-disjoint
folds, each keeping the epoch with the best validation MAP@R. With folds, test metrics are reported
for each fold's embedding ("separated", averaged over folds) and for the folds' L2-normalised
embeddings concatenated ("concatenated").

Everything is resumable: each fold writes an atomic checkpoint after every epoch and each seed its
result. Running the same command again skips finished work and continues an interrupted fold from its
last epoch. The data order of epoch ``e`` depends only on (seed, fold, e), so a resumed run follows
the same path as an uninterrupted one.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_metric_learning import testers
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import logging_presets

from .config import ConfigError, experiment_name
from .data import (
    FeatureDataset,
    FeatureSet,
    ImageSet,
    TensorImageDataset,
    class_disjoint_split,
    class_kfold,
    load_dataset,
)
from .io import atomic_torch_save, atomic_write, write_json
from .metrics import BenchAccuracyCalculator

__all__ = ["run_experiment"]

LOGGER = logging.getLogger(__name__)
PRIMARY = "mean_average_precision_at_r"


def run_experiment(cfg: DictConfig, evaluate_only: bool = False) -> Path:
    """Run (or resume, or re-evaluate) the experiment ``cfg`` describes.

    Parameters
    ----------
    cfg : DictConfig
        A config from :func:`pml_regularizers.bench.config.load_config`.
    evaluate_only : bool
        Re-test the saved models of every seed and fold without training; fails if a fold has
        no finished checkpoint.

    Returns
    -------
    Path
        The experiment folder, holding ``config.yaml``, ``results.json`` and one ``seed_<s>``
        folder per seed (record-keeper logs, checkpoints, test embeddings).
    """
    exp_dir = Path(cfg.output_dir).expanduser() / experiment_name(cfg)
    results_path = exp_dir / "results.json"
    _check_or_write_config(exp_dir, cfg)
    if results_path.exists() and not evaluate_only:
        LOGGER.info("%s is finished; not recomputed", exp_dir)
        return exp_dir
    data = _load_data(cfg)
    train_classes, test_classes = class_disjoint_split(data.labels)
    _build(cfg, data, num_classes=len(train_classes), device=torch.device("cpu"))  # config check
    device = _device(cfg.device)
    records: list[dict] = []
    for seed in range(cfg.seed_offset, cfg.seed_offset + cfg.seeds):
        records += _run_seed(
            cfg, data, train_classes, test_classes, exp_dir / f"seed_{seed}", seed, device, evaluate_only
        )
    write_json(
        results_path,
        {
            "experiment": experiment_name(cfg),
            "config": OmegaConf.to_container(cfg),
            "records": records,
        },
    )
    return exp_dir


def _run_seed(
    cfg: DictConfig,
    data: ImageSet | FeatureSet,
    train_classes: list[int],
    test_classes: list[int],
    seed_dir: Path,
    seed: int,
    device: torch.device,
    evaluate_only: bool,
) -> list[dict]:
    result_path = seed_dir / "result.json"
    if result_path.exists() and not evaluate_only:
        return json.loads(result_path.read_text())["records"]
    folds = class_kfold(train_classes, cfg.cv_folds) if cfg.cv_folds else [(train_classes, [])]
    test_set = _torch_dataset(data.subset(test_classes), augment=False)
    calc = BenchAccuracyCalculator()
    embeddings, labels = [], None
    for fold, (tr, va) in enumerate(folds):
        fold_dir = seed_dir / f"fold_{fold}"
        train_subset = data.subset(tr)
        val_set = _torch_dataset(data.subset(va), augment=False) if va else None
        models = _train_fold(
            cfg, data, train_subset, val_set, fold_dir, seed, fold, device, evaluate_only
        )
        emb, labels = _embed(models, test_set, cfg, device)
        embeddings.append(emb)
    records = []
    if len(embeddings) == 1:
        records.append(_record(seed, "single", calc.get_accuracy(embeddings[0], labels)))
        final = embeddings[0]
    else:
        per_fold = [calc.get_accuracy(e, labels) for e in embeddings]
        separated = {k: float(np.mean([m[k] for m in per_fold])) for k in per_fold[0]}
        records.append(_record(seed, "separated", separated))
        final = torch.cat(embeddings, dim=1)
        records.append(_record(seed, "concatenated", calc.get_accuracy(final, labels)))
    if cfg.save_test_embeddings:
        atomic_torch_save({"embeddings": final, "labels": labels}, seed_dir / "test_embeddings.pt")
    write_json(result_path, {"seed": seed, "records": records})
    return records


def _record(seed: int, embedding: str, metrics: dict) -> dict:
    return {
        "seed": seed,
        "split": "test",
        "embedding": embedding,
        "metrics": {k: float(v) for k, v in metrics.items()},
    }


def _train_fold(
    cfg: DictConfig,
    data: ImageSet | FeatureSet,
    train_subset: ImageSet | FeatureSet,
    val_set: torch.utils.data.Dataset | None,
    fold_dir: Path,
    seed: int,
    fold: int,
    device: torch.device,
    evaluate_only: bool,
) -> dict[str, torch.nn.Module]:
    """Train one fold from scratch or from its latest checkpoint; return trunk and embedder."""
    _reseed(seed, fold, 0)
    trunk, embedder, loss, miner = _build(cfg, data, train_subset.num_classes, device)
    models = {"trunk": trunk, "embedder": embedder}
    optimizers = _optimizers(cfg, trunk, embedder, loss)
    latest, best = fold_dir / "checkpoint_latest.pt", fold_dir / "checkpoint_best.pt"
    state = {"epoch": 0, "best_epoch": 0, "best_score": -math.inf, "done": False}
    if latest.exists():
        state = _load_checkpoint(latest, models, loss, optimizers, device)
    elif evaluate_only:
        raise FileNotFoundError(f"no saved model to evaluate: {latest} does not exist")
    if not state["done"]:
        if evaluate_only:
            raise RuntimeError(f"{fold_dir} has not finished training; run without evaluate first")
        _fit(cfg, models, loss, miner, optimizers, train_subset, val_set, fold_dir, seed, fold, device, state)
    if val_set is not None and best.exists():
        _load_checkpoint(best, models, loss, None, device)
    return models


def _fit(
    cfg: DictConfig,
    models: dict[str, torch.nn.Module],
    loss: torch.nn.Module,
    miner: torch.nn.Module | None,
    optimizers: dict[str, torch.optim.Optimizer],
    train_subset: ImageSet | FeatureSet,
    val_set: torch.utils.data.Dataset | None,
    fold_dir: Path,
    seed: int,
    fold: int,
    device: torch.device,
    state: dict,
) -> None:
    train_set = _torch_dataset(train_subset, augment=bool(cfg.dataset.augment), fill=cfg.dataset.fill)
    record_keeper, _, _ = logging_presets.get_record_keeper(
        str(fold_dir / "logs"), str(fold_dir / "tensorboard")
    )
    if record_keeper is None:
        raise RuntimeError("record-keeper logging needs the tensorboard package")
    hooks = logging_presets.get_hook_container(record_keeper, primary_metric=PRIMARY)
    sampler = None
    if cfg.sampler.get("_target_"):
        sampler = instantiate(
            cfg.sampler,
            labels=train_set.labels,
            batch_size=cfg.batch_size,
            length_before_new_iter=len(train_set),
        )
    trainer = instantiate(
        cfg.trainer,
        models=models,
        optimizers=optimizers,
        batch_size=cfg.batch_size,
        loss_funcs={"metric_loss": loss},
        mining_funcs={"tuple_miner": miner} if miner is not None else {},
        dataset=train_set,
        sampler=sampler,
        dataloader_num_workers=cfg.num_workers,
        freeze_trunk_batchnorm=cfg.freeze_trunk_bn,
        data_device=device,
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        _convert_="object",
    )
    tester = None
    if val_set is not None:
        tester = testers.GlobalEmbeddingSpaceTester(
            accuracy_calculator=BenchAccuracyCalculator(include=(PRIMARY,)),
            end_of_testing_hook=hooks.end_of_testing_hook,
            dataloader_num_workers=cfg.num_workers,
        )
    latest, best = fold_dir / "checkpoint_latest.pt", fold_dir / "checkpoint_best.pt"
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        _reseed(seed, fold, epoch)
        trainer.train(start_epoch=epoch, num_epochs=epoch)
        if tester is not None:
            acc = tester.test({"val": val_set}, epoch, models["trunk"], models["embedder"])
            score = float(acc["val"][f"{PRIMARY}_level0"])
            if score > state["best_score"]:
                state.update(best_epoch=epoch, best_score=score)
                _save_checkpoint(best, models, loss, None, state)
        record_keeper.save_records()
        state["epoch"] = epoch
        stop = cfg.patience is not None and epoch - state["best_epoch"] >= cfg.patience
        state["done"] = stop or epoch == cfg.epochs
        _save_checkpoint(latest, models, loss, optimizers, state)
        if stop:
            break


def _build(
    cfg: DictConfig, data: ImageSet | FeatureSet, num_classes: int, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, torch.nn.Module | None]:
    """Instantiate trunk, embedder, loss (with its regularizer) and miner from the config."""
    try:
        if isinstance(data, FeatureSet):
            trunk = instantiate(cfg.trunk, in_features=data.features.shape[1])
        else:
            trunk = instantiate(cfg.trunk)
        embedder = instantiate(
            cfg.embedder, in_features=trunk.output_size, out_features=cfg.embedding_size
        )
        emb_size = getattr(embedder, "out_features", None) or trunk.output_size
        loss = _build_loss(cfg, num_classes, emb_size)
        miner = instantiate(cfg.miner) if cfg.miner.get("_target_") else None
    except ConfigError:
        raise
    except Exception as err:  # instantiate wraps import and argument errors
        raise ConfigError(f"could not build the models from the config: {err}") from err
    return trunk.to(device), embedder.to(device), loss.to(device), miner


def _build_loss(cfg: DictConfig, num_classes: int, embedding_size: int) -> torch.nn.Module:
    loss_cls = get_class(cfg.loss._target_)
    params = inspect.signature(loss_cls.__init__).parameters
    extra: dict[str, Any] = {}
    if "num_classes" in params:
        extra["num_classes"] = num_classes
    if "embedding_size" in params:
        extra["embedding_size"] = embedding_size
    reg_cfg = cfg.regularizer
    if reg_cfg.get("_target_"):
        kwargs = {k: v for k, v in reg_cfg.items() if k not in ("weight", "attach")}
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


def _optimizers(
    cfg: DictConfig, trunk: torch.nn.Module, embedder: torch.nn.Module, loss: torch.nn.Module
) -> dict[str, torch.optim.Optimizer]:
    opt_cfg = {k: v for k, v in cfg.optimizer.items() if k != "loss_lr"}
    out = {"trunk_optimizer": instantiate(opt_cfg, params=list(trunk.parameters()))}
    if any(True for _ in embedder.parameters()):
        out["embedder_optimizer"] = instantiate(opt_cfg, params=list(embedder.parameters()))
    if any(True for _ in loss.parameters()):
        out["metric_loss_optimizer"] = instantiate(
            opt_cfg, params=list(loss.parameters()), lr=cfg.optimizer.loss_lr
        )
    return out


def _load_data(cfg: DictConfig) -> ImageSet | FeatureSet:
    d = cfg.dataset
    root = None if d.root is None else str(Path(d.root).expanduser())
    return load_dataset(
        d.name,
        root=root,
        size=d.size,
        cache_dir=str(Path(d.cache_dir).expanduser()),
        **OmegaConf.to_container(d.options),
    )


def _torch_dataset(
    subset: ImageSet | FeatureSet, augment: bool, fill: float = 0.0
) -> torch.utils.data.Dataset:
    if isinstance(subset, FeatureSet):
        return FeatureDataset(subset)
    return TensorImageDataset(subset, augment=augment, fill=fill)


@torch.no_grad()
def _embed(
    models: dict[str, torch.nn.Module],
    dataset: torch.utils.data.Dataset,
    cfg: DictConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    for m in models.values():
        m.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=cfg.num_workers)
    out, labels = [], []
    for x, y in loader:
        out.append(models["embedder"](models["trunk"](x.to(device))).cpu())
        labels.append(y)
    return torch.nn.functional.normalize(torch.cat(out), dim=1), torch.cat(labels)


def _reseed(seed: int, fold: int, epoch: int) -> None:
    """Seed every RNG the trainer, sampler and augmentation use from (seed, fold, epoch)."""
    s = (seed * 1_000_003 + fold * 10_007 + epoch) % (2**31)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)
    c_f.NUMPY_RANDOM.seed(s)  # PML's samplers draw from this module-level generator


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {spec!r}") from err


def _check_or_write_config(exp_dir: Path, cfg: DictConfig) -> None:
    """Refuse to resume a folder made by a different config; else write config.yaml."""
    path = exp_dir / "config.yaml"
    text = OmegaConf.to_yaml(cfg)
    if path.exists():
        if path.read_text() != text:
            old = OmegaConf.to_container(OmegaConf.load(path))
            new = OmegaConf.to_container(cfg)
            diff = sorted(_diff_keys(old, new))
            raise ConfigError(
                f"{exp_dir} holds a run of a different config (differs at: {', '.join(diff)}); "
                "choose another experiment= or output_dir="
            )
        return
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _save_checkpoint(
    path: Path,
    models: dict[str, torch.nn.Module],
    loss: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer] | None,
    state: dict,
) -> None:
    payload = {
        "models": {k: m.state_dict() for k, m in models.items()},
        "loss": loss.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
        "state": dict(state),
    }
    atomic_torch_save(payload, path)


def _load_checkpoint(
    path: Path,
    models: dict[str, torch.nn.Module],
    loss: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer] | None,
    device: torch.device,
) -> dict:
    payload = torch.load(path, map_location=device, weights_only=True)
    for k, m in models.items():
        m.load_state_dict(payload["models"][k])
    loss.load_state_dict(payload["loss"])
    for k, o in (optimizers or {}).items():
        o.load_state_dict(payload["optimizers"][k])
    return payload["state"]
