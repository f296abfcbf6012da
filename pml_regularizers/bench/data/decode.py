"""Decode image files: once into a grayscale ``uint8`` tensor, with an optional ``.pt`` cache
(:func:`decode_file_set`, and the data sets' grayscale loaders that :func:`grayscale_loader` makes
from their listers), or one at a time in a given PIL mode (:func:`read_image`)."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from .cache import files_key, load_image_set, save_image_set
from .files import require_files
from .images import FileSet, ImageSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def check_size(size: int) -> int:
    """Return ``size`` as an int, or raise ValueError when it is not a positive pixel count."""
    ok = isinstance(size, numbers.Real) and not isinstance(size, bool) and math.isfinite(size)
    if not ok or int(size) != size or size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    return int(size)


def read_image(path: Path, mode: str) -> Image.Image:
    """Open one image file, decode it and convert it to ``mode``.

    Parameters
    ----------
    path : pathlib.Path
        The image file.
    mode : str
        PIL mode of the result: ``"L"`` (grayscale) or ``"RGB"``. PIL's conversion applies, as in
        torchvision's ``ImageFolder``: grayscale, CMYK and palette images become RGB, the alpha
        channel of RGBA images is dropped.

    Returns
    -------
    PIL.Image.Image
        The decoded image, no longer tied to the open file.

    Raises
    ------
    ValueError
        When the file cannot be read or decoded (missing, truncated, not an image, too large for
        PIL's decompression-bomb limit); the message names the file.
    """
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error


def _decode_gray(path: Path, size: int) -> np.ndarray:
    """``path`` as grayscale ("L"), resized bilinearly to a ``uint8`` array ``(size, size)``."""
    gray = read_image(path, "L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def decode_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Decode ``paths`` (in parallel threads) into a ``uint8`` tensor ``(N, 1, size, size)``.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        The image files, all of which must exist.
    size : int
        Side of the square output, in pixels.

    Returns
    -------
    torch.Tensor
        The decoded images, in the order of ``paths``.
    """
    size = check_size(size)
    require_files(paths)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(_decode_gray, paths, [size] * len(paths)))
    return torch.from_numpy(np.stack(arrays)).unsqueeze(1)


def decode_file_set(
    files: FileSet,
    size: int,
    cache_dir: str | os.PathLike | None = None,
    cache_prefix: str = "images",
) -> ImageSet:
    """Decode the files of ``files`` into an :class:`ImageSet` with the same labels.

    Parameters
    ----------
    files : FileSet
        The image files and their labels.
    size : int
        Side of the square output, in pixels.
    cache_dir : str or os.PathLike, optional
        When given, the decoded set is stored there as ``<cache_prefix>-<size>px-<key>.pt``, the
        key covering the file paths, sizes and modification times, ``size`` and each file's class
        name, and reused.
    cache_prefix : str, default "images"
        Start of the cache file name.

    Returns
    -------
    ImageSet
        The decoded images and their labels.
    """
    size = check_size(size)
    cache_file = None
    if cache_dir is not None:
        key = files_key(files.paths, cache_prefix, size, files.class_keys)
        cache_file = Path(cache_dir) / f"{cache_prefix}-{size}px-{key}.pt"
        if cache_file.is_file():
            return load_image_set(cache_file)
    image_set = ImageSet(decode_images(files.paths, size), files.labels, files.class_names)
    if cache_file is not None:
        save_image_set(image_set, cache_file)
    return image_set


class GrayscaleLoader(Protocol):
    """The call signature of the loaders :func:`grayscale_loader` makes."""

    def __call__(
        self, root: str | os.PathLike, size: int = 64, cache_dir: str | os.PathLike | None = None
    ) -> ImageSet: ...


_LOADER_DOC = """Load {what}, decoded to grayscale: the files :func:`{lister}` lists, decoded once.

Parameters
----------
root : str or os.PathLike
    As for :func:`{lister}`.
size : int, default 64
    Side of the square output images, in pixels.
cache_dir : str or os.PathLike, optional
    When given, the decoded set is cached there (see :func:`decode_file_set`).

Returns
-------
ImageSet
    The images, with the labels and class names of :func:`{lister}`.

Raises
------
FileNotFoundError, NotADirectoryError, ValueError
    As :func:`{lister}`; ValueError also for a bad ``size`` or an image that cannot be decoded.
"""


def grayscale_loader(
    list_files: Callable[[str | os.PathLike], FileSet], cache_prefix: str, what: str
) -> GrayscaleLoader:
    """Make the grayscale loader of a data set from its lister: list the files, then decode them.

    The loader ``load_<name>(root, size=64, cache_dir=None)`` returns
    ``decode_file_set(list_files(root), size, cache_dir, cache_prefix)``. It is named after
    ``list_files`` (``list_cub`` gives ``load_cub``), belongs to its module, and has a docstring
    of its own.

    Parameters
    ----------
    list_files : callable
        The data set's ``list_*`` function, ``root -> FileSet``.
    cache_prefix : str
        Start of the loader's cache file names (see :func:`decode_file_set`); it keeps caches of
        different data sets apart.
    what : str
        The data set, as the first line of the loader's docstring names it.

    Returns
    -------
    GrayscaleLoader
        The loader.
    """

    def load(root: str | os.PathLike, size: int = 64, cache_dir: str | os.PathLike | None = None) -> ImageSet:
        return decode_file_set(list_files(root), size, cache_dir, cache_prefix)

    load.__name__ = load.__qualname__ = list_files.__name__.replace("list_", "load_", 1)
    load.__module__ = list_files.__module__
    load.__doc__ = _LOADER_DOC.format(what=what, lister=list_files.__name__)
    return load
