"""The data of a benchmark experiment: the data set its spec names, and the torch datasets that
serve its splits."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..spec.run_spec import DataSpec
from .images import FeatureDataset, FeatureSet, FileSet, ImageSet, TensorImageDataset
from .natural import NaturalImageDataset
from .registry import load_dataset
from .transforms import natural_transforms

__all__ = ["DataSet", "load_data", "load_experiment_data", "torch_dataset"]

DataSet = ImageSet | FeatureSet | FileSet  # what a dataset config loads: see load_experiment_data


def load_experiment_data(data: DataSpec) -> DataSet:
    """The whole data set ``data`` names, read as
    :func:`~pml_regularizers.bench.protocol.runner.run_experiment` reads it.

    Parameters
    ----------
    data : DataSpec
        The ``dataset`` part of a run's spec (a composed config's, or an experiment folder's).

    Returns
    -------
    ImageSet, FeatureSet or FileSet
        All classes, before the class-disjoint split; ``~`` in ``root`` and ``cache_dir`` is
        expanded. A FileSet (the paths of the images) for ``pipeline: natural``.
    """
    root = None if data.root is None else str(Path(data.root).expanduser())
    return load_dataset(
        data.name,
        root=root,
        size=data.size,
        cache_dir=str(Path(data.cache_dir).expanduser()),
        pipeline=data.pipeline,
        **dict(data.options),
    )


def load_data(data: DataSpec) -> DataSet:
    """:func:`load_experiment_data`, with a data set that cannot be read reported as a
    :class:`~pml_regularizers.bench.errors.UserError` (a missing root, one of the wrong kind,
    malformed files, bad options)."""
    try:
        return load_experiment_data(data)
    except (OSError, ValueError) as err:
        raise UserError(f"dataset={data.choice}: {err}") from err


def torch_dataset(
    subset: DataSet, data: DataSpec, train: bool
) -> FeatureDataset | NaturalImageDataset | TensorImageDataset:
    """The torch dataset a split of ``subset`` is served by: augmented for training when ``data``
    says so, with the transforms of its pipeline."""
    augment = train and data.augment
    if isinstance(subset, FeatureSet):
        return FeatureDataset(subset)
    if isinstance(subset, FileSet):
        assert data.mean is not None and data.std is not None and data.resize is not None
        transform = natural_transforms(augment, crop=data.size, resize=data.resize, mean=data.mean, std=data.std)
        return NaturalImageDataset(subset, transform)
    return TensorImageDataset(subset, augment=augment, fill=data.fill)
