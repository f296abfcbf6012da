"""Arrays of a data set stored as an ``.npz`` file: read them without ever unpickling, and name the
classes of their labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def read_npz(path: Path, keys: Sequence[str], layout: str) -> list[np.ndarray]:
    """Read the arrays ``keys`` of the ``.npz`` file ``path``, with ``allow_pickle=False``.

    Parameters
    ----------
    path : pathlib.Path
        An existing file.
    keys : sequence of str
        The arrays to read, all of which the file must hold.
    layout : str
        What the file should hold, quoted in error messages.

    Returns
    -------
    list of numpy.ndarray
        The arrays, in the order of ``keys``.

    Raises
    ------
    ValueError
        When the file cannot be read, is not an ``.npz`` archive (a single ``.npy`` array, a
        pickle, anything else), lacks one of ``keys``, or one of them holds Python objects (which
        only unpickling could read, and unpickling runs the file's code).
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error}; expected {layout}") from error
    except ValueError as error:  # numpy's message advises allow_pickle=True, which runs the file's code
        raise ValueError(
            f"{path} is not an .npz or .npy file (pickled files are never loaded); expected {layout}"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array; expected {layout}")
    with archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks the array(s) {missing} (it has {archive.files}); expected {layout}")
        arrays = []
        for key in keys:
            try:
                arrays.append(archive[key])
            except ValueError as error:  # object arrays: numpy would unpickle them
                raise ValueError(
                    f"the arrays of {path} hold Python objects ({key!r} does), which are never unpickled; "
                    f"expected {layout}"
                ) from error
        return arrays


def encode_labels(labels: np.ndarray, path: Path) -> tuple[list[str], np.ndarray]:
    """Name the classes of ``labels`` and number them in sorted order of the names.

    Integer labels must be non-negative; their class names are the values, zero-padded to a common
    width so that sorting the names sorts the values. String labels are their own class names.

    Parameters
    ----------
    labels : numpy.ndarray
        One label per sample, shape ``(N,)`` with ``N >= 1``.
    path : pathlib.Path
        The file the labels come from, named in error messages.

    Returns
    -------
    class_names : list of str
        The distinct names, sorted.
    ids : numpy.ndarray
        Each sample's index into ``class_names``.

    Raises
    ------
    ValueError
        When integer labels are negative, or the labels are neither integers nor strings.
    """
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
