"""Atomic ``.pt`` caching of :class:`ImageSet` objects.

A cache file holds a plain dict of tensors and strings, so it loads with
``torch.load(..., weights_only=True)``. Files are written to a temporary name in the target folder
and moved into place with :func:`os.replace`, so a reader never sees a half-written cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from ..io import atomic_torch_save
from .images import ImageSet


def save_image_set(image_set: ImageSet, path: str | os.PathLike) -> Path:
    """Write ``image_set`` to ``path`` atomically.

    Parameters
    ----------
    image_set : ImageSet
        The set to store.
    path : str or os.PathLike
        Destination ``.pt`` file; its folder is created if needed.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    payload = {
        "images": image_set.images.contiguous(),
        "labels": image_set.labels.contiguous(),
        "class_names": list(image_set.class_names),
    }
    return atomic_torch_save(payload, path)


def load_image_set(path: str | os.PathLike) -> ImageSet:
    """Read an :class:`ImageSet` written by :func:`save_image_set`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pt`` file, read with ``torch.load(..., weights_only=True)``, which runs no pickled
        code.

    Returns
    -------
    ImageSet
        The stored set.
    """
    payload = torch.load(Path(path), weights_only=True)
    return ImageSet(payload["images"], payload["labels"], list(payload["class_names"]))


def files_key(files: Iterable[Path], *extra: object) -> str:
    """Fingerprint a list of files by path, size and modification time, plus ``extra`` values.

    Parameters
    ----------
    files : iterable of pathlib.Path
        The source files, in the order they are decoded.
    *extra : object
        Further values that change the result (image size, loader name).

    Returns
    -------
    str
        A 20-character hexadecimal digest.
    """
    digest = hashlib.sha256(repr(extra).encode())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]
