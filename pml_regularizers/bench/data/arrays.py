"""Grayscale images stored as arrays in an ``.npz`` file (Omniglot's ``images_background.npz``, for
one), decoded as the grayscale pipeline decodes image files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cache import cached_image_set, files_key
from .decode import check_size
from .images import ImageSet
from .npz import encode_labels, read_npz
from .paths import require_path

ARRAYS_LAYOUT = (
    "an .npz file with arrays 'images', bool or uint8 of shape (N, H, W) or (classes, per_class, H, W), "
    "and 'labels', integers of shape (N,) or (classes, per_class)"
)


def load_arrays(
    path: str | os.PathLike,
    size: int = 32,
    cache_dir: str | os.PathLike | None = None,
) -> ImageSet:
    """Load grayscale images and their labels from an ``.npz`` file.

    The file holds two arrays. ``images``: ``bool`` or ``uint8``, shape ``(N, H, W)``, or
    ``(classes, per_class, H, W)`` (the layout of Omniglot's ``images_background.npz``), which is
    read as ``classes * per_class`` images in row-major order. A ``bool`` pixel is white (255)
    when True and black (0) when False, as Omniglot's 1-bit images are. ``labels``: integers
    ``>= 0`` of the shape of the images' leading axes, ``(N,)`` or ``(classes, per_class)``.

    Every image is resized as the grayscale pipeline resizes an image file (a PIL ``"L"`` image
    resized bilinearly to ``size`` x ``size``), so an image gives the same pixels whether it is
    read from these arrays or from a PNG file that holds it. Class names are the label values,
    zero-padded to a common width so that sorting the names sorts the values (as in
    :func:`~pml_regularizers.bench.data.load_features`); labels are renumbered
    ``0..num_classes-1`` in that order.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file; it is read with ``allow_pickle=False``, so it never runs code.
    size : int, default 32
        Side of the square output images, in pixels.
    cache_dir : str or os.PathLike, optional
        When given, the decoded set is stored there as ``arrays-<size>px-<key>.pt`` and reused;
        the key covers the file's path, size in bytes and modification time, and ``size``, so a
        changed file is decoded again; a cache file that cannot be read is rebuilt, with a
        warning that names it.

    Returns
    -------
    ImageSet
        ``uint8`` images ``(N, 1, size, size)``, in the order of the file, and their labels.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        When ``path`` does not exist, or is a folder.
    ValueError
        When ``size`` is not a positive pixel count, the file is not an ``.npz`` archive, or an
        array is missing, holds Python objects, or has the wrong type or shape (the message names
        the array); also for empty arrays and negative labels.
    """
    path = Path(path)
    size = check_size(size)
    require_path(path, "arrays file", ARRAYS_LAYOUT, kind="file")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"arrays-{size}px-{files_key([path], 'arrays', size)}.pt"
    return cached_image_set(cache_file, lambda: _decode_arrays(path, size))


def _decode_arrays(path: Path, size: int) -> ImageSet:
    images, labels = read_npz(path, ("images", "labels"), ARRAYS_LAYOUT)
    _check_arrays(images, labels, path)
    class_names, ids = encode_labels(labels.reshape(-1), path)
    return ImageSet(
        _resize(images.reshape(-1, *images.shape[-2:]), size),
        torch.from_numpy(ids.astype(np.int64)),
        class_names,
    )


def _check_arrays(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{path}: 'images' must have shape (N, H, W) or (classes, per_class, H, W), got {images.shape}"
        )
    if images.size == 0:
        raise ValueError(f"{path}: 'images' is empty, shape {images.shape}; expected {ARRAYS_LAYOUT}")
    if images.dtype not in (np.dtype(bool), np.dtype(np.uint8)):
        raise ValueError(f"{path}: 'images' must be bool or uint8, got dtype {images.dtype}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: 'labels' must hold integers, got dtype {labels.dtype}")
    if labels.shape != images.shape[:-2]:
        raise ValueError(
            f"{path}: 'labels' must have the shape of the leading axes of 'images' {images.shape}, "
            f"{images.shape[:-2]}, got {labels.shape}"
        )


def _resize(images: np.ndarray, size: int) -> torch.Tensor:
    """``images`` ``(N, H, W)``, bool or uint8, as a ``uint8`` tensor ``(N, 1, size, size)``."""
    resized = np.empty((images.shape[0], size, size), dtype=np.uint8)
    for index, image in enumerate(images):
        gray = np.where(image, 255, 0).astype(np.uint8) if image.dtype == bool else image
        resized[index] = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))
    return torch.from_numpy(resized).unsqueeze(1)
