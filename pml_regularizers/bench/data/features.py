"""Precomputed features stored as ``.npz``: arrays ``features`` (N, D) and ``labels`` (N,)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .images import FeatureSet
from .npz import encode_labels, read_npz
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
    features, labels = read_npz(path, ("features", "labels"), FEATURES_LAYOUT)
    _check_arrays(features, labels, path)
    class_names, ids = encode_labels(labels, path)
    return FeatureSet(
        torch.from_numpy(features.astype(np.float32)),
        torch.from_numpy(ids.astype(np.int64)),
        class_names,
    )


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
