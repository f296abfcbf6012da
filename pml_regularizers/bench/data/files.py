"""Image files listed by a loader, checked and labelled as a :class:`FileSet` (not decoded)."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

from .images import FileSet


def require_files(paths: Sequence[Path]) -> None:
    """Check that each of ``paths`` is an existing file, and a different one (one stat a path).

    Raises
    ------
    FileNotFoundError
        Naming the first of ``paths`` that is not an existing file, and how many are not.
    ValueError
        When two paths lead to the same file (two names of it, or a symlink to it): it would
        become two samples, each the other's nearest neighbour; the message names both.
    """
    missing: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            status = None
        if status is None or not stat.S_ISREG(status.st_mode):
            missing.append(path)
            continue
        identity = (status.st_dev, status.st_ino)
        if identity in seen:
            raise ValueError(
                f"{seen[identity]} and {path} are the same file; a file listed twice becomes two samples, "
                "each the other's nearest neighbour: keep one"
            )
        seen[identity] = path
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} image files are missing, first: {missing[0]}")


def labelled_files(paths: Sequence[Path], class_keys: Sequence[str]) -> FileSet:
    """Check that ``paths`` exist, each once, and label them by their class names, in sorted name
    order.

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
        When ``paths`` is empty, ``class_keys`` has another length, or two paths lead to the same
        file (:func:`require_files`).
    FileNotFoundError
        When one of ``paths`` is not an existing file (the message names the first).
    """
    if not paths:
        raise ValueError("no images to decode: the list of image paths is empty")
    files = FileSet.from_class_keys(paths, class_keys)
    require_files(files.paths)
    return files
