"""The data of a benchmark experiment: the data set its config names, and the torch datasets that
serve its splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from . import (
    FeatureDataset,
    FeatureSet,
    FileSet,
    ImageSet,
    NaturalImageDataset,
    TensorImageDataset,
    load_dataset,
    natural_transforms,
)

__all__ = ["DataSet", "load_data", "load_experiment_data", "torch_dataset"]

DataSet = ImageSet | FeatureSet | FileSet  # what a dataset config loads: see load_experiment_data


def load_experiment_data(cfg: DictConfig) -> DataSet:
    """The whole data set an experiment's config names, read as
    :func:`~pml_regularizers.bench.protocol.runner.run_experiment` reads it.

    Parameters
    ----------
    cfg
        A composed config (:func:`~pml_regularizers.bench.spec.compose.load_config`) or an experiment
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
        **cast(dict[str, Any], OmegaConf.to_container(d.options)),
    )


def load_data(cfg: DictConfig) -> DataSet:
    """:func:`load_experiment_data`, with a data set that cannot be read reported as a
    :class:`~pml_regularizers.bench.spec.compose.UserError` (a missing root, one of the wrong kind,
    malformed files, bad options)."""
    try:
        return load_experiment_data(cfg)
    except (OSError, ValueError) as err:
        raise UserError(f"dataset={cfg.choices.dataset}: {err}") from err


def torch_dataset(
    subset: DataSet, cfg: DictConfig, train: bool
) -> FeatureDataset | NaturalImageDataset | TensorImageDataset:
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
