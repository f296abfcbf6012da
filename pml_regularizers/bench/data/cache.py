"""Atomic ``.pt`` caching of :class:`ImageSet` objects.

A cache file holds a plain dict of tensors and strings, so it loads with
``torch.load(..., weights_only=True)``. Files are written to a temporary name in the target folder
and moved into place with :func:`os.replace`, so a reader never sees a half-written cache. A cache
is only a cache: one that cannot be read (damaged, foreign, of another layout) is discarded and
rebuilt, with a warning that names it (:func:`cached_image_set`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..results.io import atomic_torch_save, read_torch_file
from .images import ImageSet
from .problems import warn_data


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

    Raises
    ------
    OSError
        When the file cannot be opened.
    ValueError
        When it is damaged, holds objects other than tensors and plain containers, or is not an
        image set of :func:`save_image_set`'s layout; the message names the file.
    """
    payload = read_torch_file(path, "cache file")
    try:
        return ImageSet(payload["images"], payload["labels"], list(payload["class_names"]))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not an image set cache ({type(err).__name__}: {err})") from None


def cached_image_set(path: Path | None, build: Callable[[], ImageSet]) -> ImageSet:
    """The image set cached at ``path``, or ``build()``'s, then cached there.

    Parameters
    ----------
    path : pathlib.Path or None
        The cache file; None builds without caching.
    build : callable
        Makes the set (decodes the data) when there is no usable cache.

    Returns
    -------
    ImageSet
        The cached or built set.

    Warns
    -----
    DataWarning
        When the cache file cannot be read (damaged, foreign, another layout): it is deleted and
        rebuilt, and the warning names it and why.
    """
    if path is not None and path.is_file():
        try:
            return load_image_set(path)
        except (OSError, ValueError) as err:
            warn_data(f"discarding the cache file {path} ({err}); decoding the data again")
            path.unlink(missing_ok=True)
    image_set = build()
    if path is not None:
        save_image_set(image_set, path)
    return image_set


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
