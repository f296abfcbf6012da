"""Image files listed by a loader, checked and labelled as a :class:`FileSet` (not decoded)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .images import FileSet


def require_files(paths: Sequence[Path]) -> None:
    """Raise FileNotFoundError naming the first of ``paths`` that is not an existing file."""
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} image files are missing, first: {missing[0]}")


def labelled_files(paths: Sequence[Path], class_keys: Sequence[str]) -> FileSet:
    """Check that ``paths`` exist and label them by their class names, in sorted name order.

    Parameters
    ----------
    paths : sequence of pathlib.Path
        The image files, at least one.
    class_keys : sequence of str
        Class name of each file; label ``i`` goes to the ``i``-th name in sorted order.

    Returns
    -------
    FileSet
        The files, in the given order, and their labels.

    Raises
    ------
    ValueError
        When ``paths`` is empty or ``class_keys`` has another length.
    FileNotFoundError
        When one of ``paths`` is not an existing file (the message names the first).
    """
    if not paths:
        raise ValueError("no images to decode: the list of image paths is empty")
    files = FileSet.from_class_keys(paths, class_keys)
    require_files(files.paths)
    return files
