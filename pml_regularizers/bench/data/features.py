"""Precomputed features stored as ``.npz``: arrays ``features`` (N, D) and ``labels`` (N,)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .images import FeatureSet
from .paths import require_path

FEATURES_LAYOUT = "an .npz file with arrays 'features' (N, D) and 'labels' (N,), int or str"


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Load precomputed features for frozen-feature experiments.

    Integer labels must be non-negative; their class names are the values, zero-padded to a common
    width so that sorting the names sorts the values. String labels are their own class names.
    Either way, labels are renumbered ``0..num_classes-1`` in sorted order of the names.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    FeatureSet
        ``float32`` features and ``int64`` labels.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        When ``path`` does not exist, or is a folder.
    ValueError
        When an array is missing or has the wrong shape, type or length, or features are not
        finite.
    """
    path = Path(path)
    require_path(path, "features file", FEATURES_LAYOUT, kind="file")
    features, labels = _read_arrays(path)
    _check_arrays(features, labels, path)
    class_names, ids = _encode_labels(labels, path)
    return FeatureSet(
        torch.from_numpy(features.astype(np.float32)),
        torch.from_numpy(ids.astype(np.int64)),
        class_names,
    )


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error}; expected {FEATURES_LAYOUT}") from error
    except ValueError as error:  # numpy's message advises allow_pickle=True, which runs the file's code
        raise ValueError(
            f"{path} is not an .npz or .npy file (pickled files are never loaded); expected {FEATURES_LAYOUT}"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array; expected {FEATURES_LAYOUT}")
    with archive:
        missing = [key for key in ("features", "labels") if key not in archive.files]
        if missing:
            raise ValueError(
                f"{path} lacks the array(s) {missing} (it has {archive.files}); expected {FEATURES_LAYOUT}"
            )
        try:
            return archive["features"], archive["labels"]
        except ValueError as error:  # object arrays: numpy would unpickle them
            raise ValueError(
                f"the arrays of {path} hold Python objects, which are never unpickled; expected {FEATURES_LAYOUT}"
            ) from error


def _check_arrays(features: np.ndarray, labels: np.ndarray, path: Path) -> None:
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{path}: 'features' must have shape (N, D) with N, D >= 1, got {features.shape}")
    if features.dtype.kind not in "fiu":
        raise ValueError(f"{path}: 'features' must be numeric, got dtype {features.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{path}: 'labels' must have shape (N,), got {labels.shape}")
    if labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{path}: 'features' has {features.shape[0]} rows but 'labels' has {labels.shape[0]} "
            "entries; they must match"
        )
    if not np.isfinite(features).all():
        raise ValueError(f"{path}: 'features' holds NaN or infinite values")


def _encode_labels(labels: np.ndarray, path: Path) -> tuple[list[str], np.ndarray]:
    """Return the sorted class names and each sample's index into them."""
    if labels.dtype.kind in "iu":
        if labels.min() < 0:
            raise ValueError(f"{path}: integer 'labels' must be >= 0, got {labels.min()}")
        values, ids = np.unique(labels, return_inverse=True)
        width = len(str(values.max()))
        return [f"{int(value):0{width}d}" for value in values], ids
    if labels.dtype.kind in "US":
        names = labels.astype(str)
        values, ids = np.unique(names, return_inverse=True)
        return [str(value) for value in values], ids
    raise ValueError(f"{path}: 'labels' must hold integers or strings, got dtype {labels.dtype}")
