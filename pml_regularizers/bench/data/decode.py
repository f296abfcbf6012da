"""Decode image files once into a grayscale ``uint8`` tensor, with an optional ``.pt`` cache."""

from __future__ import annotations

import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .cache import files_key, load_image_set, save_image_set
from .images import ImageSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def check_size(size: int) -> int:
    """Return ``size`` as an int, or raise ValueError when it is not a positive pixel count."""
    ok = isinstance(size, numbers.Real) and not isinstance(size, bool) and math.isfinite(size)
    if not ok or int(size) != size or size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    return int(size)


def require_files(paths: Sequence[Path]) -> None:
    """Raise FileNotFoundError naming the first of ``paths`` that is not an existing file."""
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} image files are missing, first: {missing[0]}"
        )


def decode_image(path: Path, size: int) -> np.ndarray:
    """Open one image, convert it to grayscale ("L") and resize it bilinearly to ``size``.

    Parameters
    ----------
    path : pathlib.Path
        The image file.
    size : int
        Side of the square output, in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(size, size)``.
    """
    try:
        with Image.open(path) as image:
            gray = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    except OSError as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error
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
        arrays = list(pool.map(decode_image, paths, [size] * len(paths)))
    return torch.from_numpy(np.stack(arrays)).unsqueeze(1)


def build_image_set(
    paths: Sequence[Path],
    class_keys: Sequence[str],
    size: int,
    cache_dir: str | os.PathLike | None = None,
    cache_prefix: str = "images",
) -> ImageSet:
    """Decode ``paths`` into an :class:`ImageSet` whose classes are the sorted ``class_keys``.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        The image files.
    class_keys : sequence of str
        Class name of each file; label ``i`` goes to the ``i``-th name in sorted order.
    size : int
        Side of the square output, in pixels.
    cache_dir : str or os.PathLike, optional
        When given, the decoded set is stored there as ``<cache_prefix>-<key>.pt``, the key
        covering the file paths, sizes and modification times and ``size``, and reused.
    cache_prefix : str, default "images"
        Start of the cache file name.

    Returns
    -------
    ImageSet
        The decoded images and their labels.
    """
    if len(paths) != len(class_keys):
        raise ValueError(f"got {len(paths)} paths but {len(class_keys)} class keys")
    if not paths:
        raise ValueError("no images to decode: the list of image paths is empty")
    size = check_size(size)
    require_files(paths)
    cache_file = None
    if cache_dir is not None:
        key = files_key(paths, cache_prefix, size, list(class_keys))
        cache_file = Path(cache_dir) / f"{cache_prefix}-{size}px-{key}.pt"
        if cache_file.is_file():
            return load_image_set(cache_file)
    class_names = sorted(set(class_keys))
    index = {name: label for label, name in enumerate(class_names)}
    labels = torch.tensor([index[key] for key in class_keys], dtype=torch.int64)
    image_set = ImageSet(decode_images(paths, size), labels, class_names)
    if cache_file is not None:
        save_image_set(image_set, cache_file)
    return image_set
