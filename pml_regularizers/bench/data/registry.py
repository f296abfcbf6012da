"""Load a benchmark data set by name."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from .arrays import load_arrays
from .features import load_features
from .folder import list_image_folder, load_image_folder
from .glyphs import load_glyphs
from .images import FeatureSet, FileSet, ImageSet
from .omniglot import load_omniglot
from .pml_folders import list_cars196, list_cub, list_sop, load_cars196, load_cub, load_sop


def _glyphs(root: str | None, size: int, cache_dir: str, **kwargs: Any) -> ImageSet:
    return load_glyphs(cache_dir, size=size, **kwargs)


def _omniglot(root: str, size: int, cache_dir: str, **kwargs: Any) -> ImageSet:
    return load_omniglot(root, size=size, cache_dir=cache_dir, **kwargs)


def _with_cache(loader: Callable[..., ImageSet]) -> Callable[..., ImageSet]:
    def load(root: str, size: int, cache_dir: str, **kwargs: Any) -> ImageSet:
        return loader(root, size=size, cache_dir=cache_dir, **kwargs)

    return load


def _features(root: str, size: int, cache_dir: str, **kwargs: Any) -> FeatureSet:
    return load_features(root, **kwargs)


_LOADERS: dict[str, Callable[..., ImageSet | FeatureSet]] = {
    "glyphs": _glyphs,
    "omniglot": _omniglot,
    "cub": _with_cache(load_cub),
    "cars196": _with_cache(load_cars196),
    "sop": _with_cache(load_sop),
    "folder": _with_cache(load_image_folder),
    "features": _features,
    "arrays": _with_cache(load_arrays),
}
_NEEDS_ROOT = frozenset(_LOADERS) - {"glyphs"}
# The loader each name calls, whose keyword arguments other than the ones load_dataset fills in
# are the data set's options.
_OPTIONS_OF: dict[str, Callable[..., Any]] = {
    "glyphs": load_glyphs,
    "omniglot": load_omniglot,
    "cub": load_cub,
    "cars196": load_cars196,
    "sop": load_sop,
    "folder": load_image_folder,
    "features": load_features,
    "arrays": load_arrays,
}
_FILLED_IN = frozenset({"root", "path", "size", "cache_dir"})
PIPELINES = ("grayscale", "natural")
# The natural pipeline lists the files; the images are decoded when they are served.
_LISTERS: dict[str, Callable[[str | os.PathLike], FileSet]] = {
    "cub": list_cub,
    "cars196": list_cars196,
    "sop": list_sop,
    "folder": list_image_folder,
}


NATURAL_DATASETS = tuple(_LISTERS)  # the data sets of image files, which the natural pipeline can serve


def dataset_names() -> list[str]:
    """Return the names that :func:`load_dataset` accepts."""
    return list(_LOADERS)


def load_dataset(
    name: str,
    root: str | os.PathLike | None,
    size: int,
    cache_dir: str | os.PathLike,
    pipeline: str = "grayscale",
    **kwargs: Any,
) -> ImageSet | FeatureSet | FileSet:
    """Load the data set ``name``.

    Parameters
    ----------
    name : str
        One of :func:`dataset_names`: ``"glyphs"`` (generated, needs no ``root``), ``"omniglot"``,
        ``"cub"``, ``"cars196"``, ``"sop"``, ``"folder"`` (a folder of class folders),
        ``"features"`` (``root`` is the ``.npz`` file; ``size`` is ignored) or ``"arrays"``
        (``root`` is an ``.npz`` file of images and labels).
    root : str or os.PathLike or None
        Location of the data on disk.
    size : int
        Side of the square images, in pixels (grayscale pipeline only).
    cache_dir : str or os.PathLike
        Folder for generated data, extracted archives and decoded-image caches (grayscale
        pipeline only).
    pipeline : str, default "grayscale"
        One of ``PIPELINES``. ``"grayscale"``: the images decoded once into an
        :class:`ImageSet` (grayscale, ``size`` pixels square, cached). ``"natural"``: the image
        files listed, not decoded, as a :class:`FileSet`, for
        :class:`~pml_regularizers.bench.data.natural.NaturalImageDataset` to decode as RGB when
        serving them; only for the data sets of natural images, ``"cub"``, ``"cars196"``,
        ``"sop"`` and ``"folder"``.
    **kwargs
        Passed on to the loader (for example ``num_classes`` for ``"glyphs"``).

    Returns
    -------
    ImageSet or FeatureSet or FileSet
        The loaded data.

    Raises
    ------
    ValueError
        When ``name`` or ``pipeline`` is unknown, ``pipeline`` is ``"natural"`` for a data set
        without natural images, ``root`` is missing for a data set that needs one, or ``kwargs``
        names an option the data set does not have.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(_LOADERS)}")
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; valid pipelines: {', '.join(PIPELINES)}")
    if pipeline == "natural" and name not in _LISTERS:
        raise ValueError(
            f"dataset {name!r} has no natural pipeline; valid choices: pipeline='grayscale' for "
            f"{name!r}, or pipeline='natural' with the datasets {', '.join(_LISTERS)}"
        )
    if root is None and name in _NEEDS_ROOT:
        raise ValueError(f"dataset {name!r} needs root (the folder or file holding its data)")
    loader = _LISTERS[name] if pipeline == "natural" else _OPTIONS_OF[name]
    options = set(inspect.signature(loader).parameters) - _FILLED_IN
    unknown = sorted(set(kwargs) - options)
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no option {', '.join(unknown)}; its options: {', '.join(sorted(options)) or 'none'}"
        )
    if pipeline == "natural":
        assert root is not None  # every name in _LISTERS is in _NEEDS_ROOT, checked above
        return _LISTERS[name](root, **kwargs)
    return _LOADERS[name](root, size, cache_dir, **kwargs)
