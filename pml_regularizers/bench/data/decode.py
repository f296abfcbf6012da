"""Decode image files: once into a grayscale ``uint8`` tensor, with an optional ``.pt`` cache
(:func:`decode_file_set`, and the data sets' grayscale loaders that :func:`grayscale_loader` makes
from their listers), or one at a time in a given PIL mode (:func:`read_image`).

Decoding is right or loud. Images of more than 8 bits a channel (16-bit PNG and TIFF) are scaled
to 8 bits, not clipped. JPEG files are decoded by libjpeg-turbo through simplejpeg, which gives
PIL's pixels and, unlike PIL, reports damaged data: such a file is decoded as far as it goes (as
PIL would) with a :class:`~pml_regularizers.bench.data.problems.DataWarning` naming it. A file
that cannot be decoded raises :class:`~pml_regularizers.bench.data.problems.ImageDecodeError`
naming it.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageFile

from ..errors import ImageDecodeError
from .cache import cached_image_set, files_key
from .files import require_files
from .images import FileSet, ImageSet
from .problems import DAMAGED_DATA, warn_data

# PIL modes of more than 8 bits a channel, and the largest value of their depth.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_MAX = 65535


@functools.cache
def readable_suffixes() -> frozenset[str]:
    """The file suffixes (lower case, with the dot) of the image formats PIL opens and decodes:
    ``Image.registered_extensions()`` without the formats PIL only identifies (its stub plugins,
    such as HDF5 and WMF, which need a handler installed to decode)."""
    Image.init()

    def decodes(image_format: str) -> bool:
        factory = Image.OPEN[image_format][0]
        return not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))

    return frozenset(
        suffix
        for suffix, image_format in Image.registered_extensions().items()
        if image_format in Image.OPEN and decodes(image_format)
    )


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
        channel of RGBA images is dropped. Images of more than 8 bits a channel are first scaled
        to 8 bits (:func:`to_8_bit`).

    Returns
    -------
    PIL.Image.Image
        The decoded image, no longer tied to the open file.

    Raises
    ------
    ImageDecodeError
        A ValueError naming the file, when it cannot be read or decoded (missing, empty,
        truncated, not an image, too large for PIL's decompression-bomb limit, pixels of a range
        that cannot be scaled).

    Warns
    -----
    DataWarning
        Naming the file, for a JPEG whose data the decoder reports as damaged; the image is
        decoded as far as it goes, as PIL decodes it.
    """
    try:
        with Image.open(path) as image:
            decoded = _decode_jpeg(path, image) if image.format == "JPEG" else to_8_bit(image)
            return decoded.convert(mode)
    except ImageDecodeError:
        raise
    except Exception as error:  # noqa: BLE001 -- PIL's plugins raise many kinds for a bad file
        raise ImageDecodeError(f"cannot decode image {path}: {error or type(error).__name__}") from error


def to_8_bit(image: Image.Image) -> Image.Image:
    """Decode ``image`` and bring images of more than 8 bits a channel to 8 bits, scaled.

    PIL's ``convert`` clips such pixels to 255 instead: a 16-bit PNG would come out almost white.
    16-bit modes (``I;16`` and its byte orders) are scaled by ``255 / 65535``, rounded. Mode
    ``I`` (32-bit integers; some readers give it for 16-bit files) is scaled the same way when its
    values lie in ``0..65535``; mode ``F`` (32-bit floats) by 255 when they lie in ``[0, 1]``.
    Other modes are returned as they are, loaded.

    Raises
    ------
    ValueError
        For mode ``I`` or ``F`` pixels outside those ranges, whose scale cannot be known.
    """
    image.load()
    if image.mode not in (*SIXTEEN_BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    top = 1.0 if image.mode == "F" else SIXTEEN_BIT_MAX
    if low < 0 or high > top:
        raise ValueError(
            f"its {image.mode} pixels range from {low:g} to {high:g}, outside 0..{top:g}, so their scale is "
            "unknown; convert it to 8 or 16 bits a channel"
        )
    return Image.fromarray(np.rint(values * (255 / top)).astype(np.uint8))


def _decode_jpeg(path: Path, image: Image.Image) -> Image.Image:
    """Decode the JPEG file ``path``, opened as ``image``; warn when its data is damaged.

    RGB and grayscale JPEGs are decoded by simplejpeg (libjpeg-turbo, as PIL's decoder, with the
    same settings, so the same pixels) in strict mode, which fails where libjpeg only warns.
    Other JPEGs (CMYK) are checked by it and decoded by PIL. When the strict decoder fails but a
    lenient one succeeds, the data is damaged: PIL's decode is used, as before, with a warning
    (PIL raises for what it cannot decode at all, such as a truncated file).
    """
    data = path.read_bytes()
    colorspace = {"RGB": "RGB", "L": "GRAY", "CMYK": "CMYK"}.get(image.mode)
    if colorspace is None:
        return to_8_bit(image)
    try:
        array = simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True)
    except ValueError as strict_error:
        try:
            simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=False)
        except ValueError:  # beyond what libjpeg-turbo decodes: PIL decides
            return to_8_bit(image)
        image.load()
        warn_data(
            f"damaged image data in {path} ({strict_error}); it is used as decoded, as far as it goes",
            [(f"{DAMAGED_DATA} ({strict_error})", path)],
        )
        return image
    if image.mode == "CMYK":  # checked only: PIL's decode handles Adobe's inverted CMYK
        return to_8_bit(image)
    return Image.fromarray(array[..., 0] if image.mode == "L" else array)


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
        name, and reused (a cache file that cannot be read is rebuilt:
        :func:`~pml_regularizers.bench.data.cache.cached_image_set`).
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
    return cached_image_set(
        cache_file, lambda: ImageSet(decode_images(files.paths, size), files.labels, files.class_names)
    )


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
