"""DataLoaders of the natural-image pipeline, whose augmentation does not depend on the workers.

Training batches are reproducible per seeding of torch's global generator: the runner reseeds it
per (seed, fold, epoch) before each epoch, and :class:`SeededSampler`, which runs in the main
process, draws from it the order of the items (when it shuffles) and one seed per item. The dataset
(:class:`~pml_regularizers.bench.data.natural.NaturalImageDataset`) runs each item's random
transform under that seed, so an epoch's batches are the same whichever worker serves which item:
with no workers, with any number of them, and with persistent workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sized
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..._arguments import is_int, is_positive_int
from ..spec.run_spec import RuntimeSpec
from .images import FeatureDataset, TensorImageDataset

MAX_AUTO_WORKERS = 8
SEED_BLOCK = 1024  # item seeds are drawn this many at a time


def auto_num_workers(world_size: int = 1) -> int:
    """The number of DataLoader workers to use per process when none is set.

    The CPUs this process may run on (``os.sched_getaffinity`` where the platform has it, which
    honours ``taskset`` and batch-system CPU sets, else ``os.cpu_count()``), shared evenly among
    the ``world_size`` processes on the node, and at most 8: beyond that, decoding rarely keeps
    up any better, while every worker holds its own interpreter, torch and prefetched batches.
    The main process is not subtracted, since it mostly waits for the accelerator.

    Parameters
    ----------
    world_size : int, default 1
        Processes of the run on this node (one per GPU under ``torchrun``).

    Returns
    -------
    int
        Workers per process, from 0 (more processes than CPUs: decode in the main process) to 8.
    """
    if not is_positive_int(world_size):
        raise ValueError(f"world_size must be a positive int (processes on the node), got {world_size!r}")
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    return min(MAX_AUTO_WORKERS, cpus // world_size)


class SeededSampler(Sampler[tuple[int, int]]):
    """Yield ``(index, item_seed)`` pairs: the indices of ``inner`` (or a shuffle), one seed each.

    At the start of each iteration (each epoch), one number is drawn from torch's global generator
    to seed a private ``torch.Generator``, from which the item seeds (ints in
    ``0..2**63-2``) are drawn. Without ``inner``, a random permutation of ``range(length)`` is
    drawn first, from the global generator, as a shuffling DataLoader does. So the pairs of an
    epoch depend only on the global generator's state when the epoch starts (and on ``inner``).

    Parameters
    ----------
    inner : Sampler of int or None
        The sampler whose indices to pair with seeds, for instance PML's ``MPerClassSampler``;
        None to shuffle ``range(length)``.
    length : int, optional
        The number of items to shuffle; required when ``inner`` is None, and not accepted
        otherwise (the length is then ``len(inner)``).

    Attributes
    ----------
    inner : Sampler of int or None
        The wrapped sampler (for instance, to call a ``DistributedSampler``'s ``set_epoch``).
    """

    def __init__(self, inner: Iterable[int] | None, length: int | None = None) -> None:
        if inner is None:
            if not is_int(length, 0):
                raise ValueError(
                    f"length must be an int >= 0 (the number of items to shuffle) when inner is None, got {length!r}"
                )
        elif length is not None:
            raise ValueError(
                f"length is only for inner=None; with a sampler the length is len(inner), got length={length!r}"
            )
        elif not isinstance(inner, Sized):
            raise ValueError(f"inner must be a sampler with a length, got {type(inner).__name__}")
        self.inner = inner
        self._length = length

    def __len__(self) -> int:
        return len(self.inner) if self.inner is not None else cast(int, self._length)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.inner is None:
            indices: Iterable[int] = torch.randperm(cast(int, self._length)).tolist()
        else:
            indices = self.inner
        generator = torch.Generator()
        generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_()))
        for index, seed in zip(indices, _item_seeds(generator)):
            yield int(index), seed


def _item_seeds(generator: torch.Generator) -> Iterator[int]:
    while True:
        yield from torch.randint(0, 2**63 - 1, (SEED_BLOCK,), generator=generator).tolist()


def training_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader of training batches with per-item seeded augmentation.

    Parameters
    ----------
    dataset : Dataset
        A dataset whose items can be asked for as ``(index, item_seed)``, such as
        :class:`~pml_regularizers.bench.data.natural.NaturalImageDataset`.
    batch_size : int
        Items per batch; an incomplete last batch is dropped, as in PML's trainers.
    sampler : Sampler of int, optional
        The order of the items, for instance PML's ``MPerClassSampler``; None shuffles them.
        It is wrapped in a :class:`SeededSampler` (the loader's ``sampler``).
    num_workers : int, default 0
        Worker processes that decode; 0 decodes in the calling process. See
        :func:`auto_num_workers`.
    pin_memory : bool, default False
        Put batches in page-locked memory, for faster copies to a GPU; only useful when
        training on one.
    persistent_workers : bool, default False
        Keep the workers between epochs; ignored when ``num_workers`` is 0.

    Returns
    -------
    torch.utils.data.DataLoader
        The loader. Iterating it draws from torch's global generator only in the
        :class:`SeededSampler` (the loader has its own generator for its workers' base seed,
        which no item's augmentation uses), so the batches of an epoch depend only on the global
        generator's state when the epoch starts, whatever ``num_workers`` and
        ``persistent_workers`` are.
    """
    _check_loader_arguments(batch_size, num_workers)
    seeded = SeededSampler(sampler, len(cast(Sized, dataset)) if sampler is None else None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=seeded,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=persistent_workers and num_workers > 0,
        generator=torch.Generator(),
    )


def evaluation_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over every item of ``dataset`` in order, the last batch possibly smaller.

    Parameters
    ----------
    dataset : Dataset
        The dataset, served with deterministic (evaluation) transforms.
    batch_size : int
        Items per batch.
    num_workers : int, default 0
        Worker processes that decode; 0 decodes in the calling process.
    pin_memory : bool, default False
        Put batches in page-locked memory, for faster copies to a GPU.

    Returns
    -------
    torch.utils.data.DataLoader
        The loader; iterating it draws nothing from torch's global generator.
    """
    _check_loader_arguments(batch_size, num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
        generator=torch.Generator(),
    )


def _check_loader_arguments(batch_size: int, num_workers: int) -> None:
    if not is_positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not is_int(num_workers, 0):
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")


def num_workers(runtime: RuntimeSpec, dataset: torch.utils.data.Dataset, world: int) -> int:
    """The run's ``num_workers``, with ``auto`` meaning none for data held in memory as tensors (a
    worker would only copy them), else :func:`auto_num_workers` for the ``world`` processes."""
    if runtime.num_workers != "auto":
        return int(runtime.num_workers)
    return 0 if isinstance(dataset, (TensorImageDataset, FeatureDataset)) else auto_num_workers(world)
