"""Checks of a benchmark run made before anything is written: the output folder, the split and
the batches each training fold gives.

A run that would measure nothing is refused here with a
:class:`~pml_regularizers.bench.errors.ConfigError` naming the
numbers: a training fold whose epochs would hold no batch (counted through the sampler the run
uses, per torchrun process), a training fold of fewer than 2 classes, and a test set or validation
fold with fewer than 2 classes of 2 or more images (every retrieval metric would be 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sized
from pathlib import Path
from typing import cast

import torch
from pytorch_metric_learning.utils import common_functions as c_f

from ..data import class_disjoint_split, training_folds
from ..errors import ConfigError
from ..spec.run_spec import Component, DataSpec, ProtocolSpec

__all__ = [
    "check_batches",
    "check_input",
    "check_output_dir",
    "check_retrieval_sets",
    "check_training_folds",
    "split_classes",
    "training_sampler",
]

LOGGER = logging.getLogger(__name__)


# The channels of the images each pipeline serves.
PIPELINE_CHANNELS = {"grayscale": 1, "natural": 3}


def check_input(data: DataSpec, trunk: Component) -> None:
    """Refuse a ``dataset.channels`` that is not what the pipeline serves (grayscale: 1, natural:
    RGB, 3), a trunk whose input channels are not the data set's, and a natural-image pipeline
    whose transforms cannot be built (a crop larger than the resize, a bad mean or std)."""
    served = PIPELINE_CHANNELS[data.pipeline]
    if data.channels != served:
        raise ConfigError(
            f"dataset.channels is {data.channels} but dataset.pipeline={data.pipeline} serves {served}-channel "
            f"images; set dataset.channels={served}, or the other pipeline"
        )
    channels = trunk.get("in_channels")
    if channels is not None and channels != data.channels:
        raise ConfigError(
            f"trunk.in_channels is {channels} but dataset={data.choice} gives {data.channels}-channel "
            f"images; leave trunk.in_channels at its default (${{dataset.channels}}) or set both"
        )
    if data.pipeline == "natural":
        from ..data import natural_transforms

        assert data.resize is not None and data.mean is not None and data.std is not None  # DataSpec's check
        try:
            natural_transforms(False, crop=data.size, resize=data.resize, mean=data.mean, std=data.std)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"dataset: {err}") from err


def check_output_dir(exp_dir: Path) -> None:
    """Refuse an experiment folder that is a file or lies under one."""
    for path in (exp_dir, *exp_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(
                    f"output_dir: {path} is a file, not a folder; choose another output_dir= or experiment="
                )
            return


def split_classes(
    protocol: ProtocolSpec, labels: torch.Tensor
) -> tuple[list[int], list[int], list[tuple[list[int], list[int]]]]:
    """The training classes, the test classes and the training folds (:func:`training_folds`):
    the halves of :func:`class_disjoint_split`, or with ``test_split: none`` every class and no
    test class."""
    classes: list[int] = torch.unique(labels).tolist()
    test_classes: list[int]
    if protocol.trains_on_all_classes:
        if len(classes) < 2:
            raise ConfigError(
                f"the data set holds only {len(classes)} class; training with test_split=none needs at least 2"
            )
        train_classes, test_classes, holder = classes, [], "the data set"
    else:
        if len(classes) < 2:
            raise ConfigError(
                f"the data set holds only {len(classes)} class; the benchmark needs at least 4 "
                "(2 to train on, 2 to test on)"
            )
        train_classes, test_classes = class_disjoint_split(labels)
        holder = "the training half"
    if protocol.cv_folds > len(train_classes):
        raise ConfigError(
            f"cv_folds={protocol.cv_folds} needs at least {protocol.cv_folds} training classes; "
            f"{holder} holds {len(train_classes)}"
        )
    return train_classes, test_classes, training_folds(train_classes, protocol.cv_folds)


def check_retrieval_sets(
    protocol: ProtocolSpec,
    labels: torch.Tensor,
    test_classes: list[int],
    folds: list[tuple[list[int], list[int]]],
) -> None:
    """Refuse a test set (when tested: ``protocol.tests_held_out_classes``) or validation fold
    whose retrieval metrics would mean nothing: fewer than 2 classes with 2 or more images. Classes
    with a single image are named in a warning: as queries they have nothing to retrieve, so the
    metrics leave them out."""
    counts = torch.bincount(labels).tolist()
    tested = protocol.tests_held_out_classes
    sets = [("the test set holds", "test", test_classes, "use a data set with more classes")] if tested else []
    sets += [
        (f"fold {i} validates on", f"fold {i} validation", va, "use fewer cv_folds")
        for i, (_, va) in enumerate(folds)
        if va
    ]
    for subject, kind, classes, advice in sets:
        paired = sum(counts[c] >= 2 for c in classes)
        if paired < 2:
            found = f"{len(classes)} class{'es' if len(classes) != 1 else ''}"
            if paired < len(classes) and len(classes) > 1:
                found += ", none of them" if paired == 0 else f", only {paired} of them"
                found += " with 2 or more images"
            raise ConfigError(
                f"{subject} {found}; retrieval metrics need at least 2 classes with 2 or more images each: {advice}"
            )
        single = len(classes) - paired
        if single:
            LOGGER.warning(
                "%d of the %d %s classes have a single image: as queries they have nothing to "
                "retrieve, so the retrieval metrics leave them out",
                single,
                len(classes),
                kind,
            )


def check_training_folds(
    batch_size: int,
    sampler: Component | None,
    labels: torch.Tensor,
    folds: list[tuple[list[int], list[int]]],
    world: int = 1,
) -> None:
    """Refuse a training fold with fewer than 2 classes, or whose epochs would hold no batch of
    ``batch_size`` (the global batch) drawn by ``sampler`` (:func:`check_batches`)."""
    for fold, (tr, _) in enumerate(folds):
        if len(tr) < 2:
            raise ConfigError(
                f"fold {fold} trains on {len(tr)} class; metric learning needs at least 2 "
                "(use a data set with more classes)"
            )
        _, fold_labels = torch.unique(labels[torch.isin(labels, torch.tensor(tr))], return_inverse=True)
        check_batches(batch_size, sampler, fold, fold_labels, world)


def check_batches(
    batch_size: int, sampler_spec: Component | None, fold: int, labels: torch.Tensor, world: int = 1
) -> None:
    """Refuse a training fold (``labels``: its images' labels, ``0..k-1``) whose epochs would hold
    no batch.

    This counts the batches of the data loader PML's trainers build (``drop_last=True``) over the
    sampler the run would use (``sampler_spec``), with each of the ``world`` processes drawing
    ``batch_size / world`` of every batch.
    """
    size, per_process = len(labels), batch_size // world
    shared = f" ({per_process} on each of {world} processes)" if world > 1 else ""
    if size // world < per_process:
        raise ConfigError(
            f"fold {fold} trains on {size} images but batch_size is {batch_size}{shared}: its "
            "epochs would have no batch (the trainer drops an incomplete last batch); use "
            f"batch_size={size // world * world} or less, or more images"
        )
    try:
        sampler = training_sampler(sampler_spec, labels, per_process, world, rank=0, seed=0)
    except Exception as err:  # noqa: BLE001 -- samplers refuse sizes with asserts or errors of any kind
        assert sampler_spec is not None  # without one, no sampler is built
        cause = err.__cause__ or err  # Hydra wraps the error of the target it calls
        raise ConfigError(
            f"fold {fold} trains on {len(torch.unique(labels))} classes ({size} images) but sampler "
            f"{sampler_spec.target.rsplit('.', 1)[-1]} cannot draw batches of {per_process} from "
            f"them (batch_size is {batch_size}{shared}): {str(cause) or type(cause).__name__}"
        ) from err
    loader = c_f.get_train_dataloader(range(size), per_process, sampler, 0, None)
    if len(loader) == 0:
        raise ConfigError(
            f"fold {fold}: sampler {type(sampler).__name__} gives {len(cast(Sized, sampler))} samples an epoch, "
            f"fewer than a batch of {per_process} (batch_size is {batch_size}{shared}), so its "
            "epochs would have no batch"
        )


def training_sampler(
    sampler: Component | None, labels: torch.Tensor, batch_size: int, world: int, rank: int, seed: int
) -> torch.utils.data.Sampler | None:
    """The training sampler of one fold: ``sampler`` (the configured one), each of the ``world``
    processes drawing its own batches of ``batch_size``; without one, process ``rank``'s shard
    under torchrun, else None (the trainer shuffles)."""
    if sampler is not None:
        return cast(
            torch.utils.data.Sampler,
            sampler.build(labels=labels, batch_size=batch_size, length_before_new_iter=len(labels) // world),
        )
    if world > 1:
        return torch.utils.data.DistributedSampler(
            cast(torch.utils.data.Dataset, range(len(labels))),
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
    return None
