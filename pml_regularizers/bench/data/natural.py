"""Natural images served from their files: each decoded when it is served, as RGB, and transformed.

This is how the field trains on CUB, Cars196 and SOP: nothing but the paths and labels is held in
memory (SOP's 120,053 images would take 18 GB as one ``uint8`` tensor at 224 px), and DataLoader
workers decode in parallel.

Reproducible augmentation: an item can be asked for as ``(index, item_seed)``. Its transform then
runs under ``torch.random.fork_rng`` with torch's CPU generator seeded to ``item_seed``, so its
random choices depend on that seed alone (not on the worker that serves it, nor on what that
worker served before), and the caller's generator is left as it was.
:class:`~pml_regularizers.bench.data.loader.SeededSampler` yields such pairs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .decode import read_image
from .images import FileSet


class NaturalImageDataset(Dataset):
    """Serve the files of a :class:`FileSet` as transformed RGB images.

    Each item is ``(image, label)``: the file decoded with PIL and converted to RGB (grayscale,
    CMYK and palette images become three channels and an alpha channel is dropped, as in
    torchvision's ``ImageFolder``), passed through ``transform``, and its ``int`` label.

    Parameters
    ----------
    file_set : FileSet
        The image files and their labels.
    transform : callable
        Maps an RGB PIL image to a tensor, for instance
        :func:`~pml_regularizers.bench.data.transforms.natural_transforms`'s ``float32``
        ``(3, crop, crop)`` images. Only its use of torch's CPU generator is seeded.

    Attributes
    ----------
    labels : torch.Tensor
        The ``int64`` labels, for samplers such as PML's ``MPerClassSampler``.
    transform : callable
        The transform.

    Notes
    -----
    The paths are held as one NumPy byte-string array rather than a list of Python objects: a
    forked DataLoader worker that reads the items of a list writes their reference counts, and
    so gets its own copy of the memory pages that hold them; an array is read without writes.
    """

    def __init__(self, file_set: FileSet, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self._paths = np.array([os.fsencode(path) for path in file_set.paths], dtype=np.bytes_)
        self.labels = file_set.labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, index: int) -> Path:
        """Return the file of item ``index``."""
        return Path(os.fsdecode(self._paths[index]))

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Decode, convert and transform one image.

        Parameters
        ----------
        item : int or (int, int)
            The index, or ``(index, item_seed)`` to run the transform with torch's CPU generator
            seeded to ``item_seed`` (an int in ``0..2**64-1``) and restored afterwards.

        Returns
        -------
        tuple of (torch.Tensor, int)
            The transformed image and its label.

        Raises
        ------
        ValueError
            When the file cannot be read or decoded; the message names it.
        """
        index, seed = item if isinstance(item, tuple) else (item, None)
        image = read_image(self.path(index), "RGB")
        if seed is None:
            tensor = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                tensor = self.transform(image)
        return tensor, int(self.labels[index])
