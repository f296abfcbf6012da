"""The models an experiment trained, rebuilt from its folder: its data and split as the runner read
them, and the trunk and embedder each fold tested.

This is where reading an experiment folder meets model building; the folder itself
(:class:`~pml_regularizers.bench.results.folder.ExperimentFolder`) only reads and writes files.
"""

from __future__ import annotations

import torch

from ..data.serve import DataSet, load_experiment_data
from ..models.build import build_models
from ..results.checkpoints import apply_checkpoint, read_checkpoint
from ..results.folder import ExperimentFolder, FoldFolder
from .preflight import split_classes

__all__ = ["experiment_data", "experiment_split", "trained_models"]


def experiment_data(folder: ExperimentFolder) -> DataSet:
    """The experiment's whole data set, read as the runner reads it
    (:func:`~pml_regularizers.bench.data.serve.load_experiment_data`)."""
    return load_experiment_data(folder.spec().data)


def experiment_split(
    folder: ExperimentFolder, data: DataSet
) -> tuple[list[int], list[int], list[tuple[list[int], list[int]]]]:
    """The training classes, the test classes and the folds' (training, validation) classes of
    ``data`` (:func:`experiment_data`), as the runner split them."""
    return split_classes(folder.spec().protocol, data.labels)


def trained_models(
    folder: ExperimentFolder, fold: FoldFolder, data: DataSet | None = None
) -> dict[str, torch.nn.Module] | None:
    """The trunk and embedder the runner tested for ``fold``, rebuilt from the experiment's spec.

    Parameters
    ----------
    folder : ExperimentFolder
        The experiment.
    fold : FoldFolder
        One of its folds.
    data : ImageSet, FeatureSet or FileSet, optional
        The experiment's data (:func:`experiment_data`, read when not given): a feature trunk takes
        its width from it.

    Returns
    -------
    dict or None
        ``{"trunk": ..., "embedder": ...}`` on the CPU in eval mode, holding the weights of the
        fold's tested checkpoint
        (:meth:`~pml_regularizers.bench.results.folder.ExperimentFolder.tested_checkpoint`); None
        before the fold has finished.

    Raises
    ------
    UserError
        When the checkpoint cannot be read, belongs to another run, or does not fit the models.
    """
    path = folder.tested_checkpoint(fold)
    if path is None:
        return None
    spec = folder.spec()
    models = build_models(spec.models, experiment_data(folder) if data is None else data)
    apply_checkpoint(read_checkpoint(path, owner=folder.checkpoint_owner(fold)), path, models)
    for model in models.values():
        model.eval()
    return models
