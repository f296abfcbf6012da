"""A generic image folder: ``root/<class_name>/*.{png,jpg,jpeg,bmp}``."""

from __future__ import annotations

import os
from pathlib import Path

from .decode import IMAGE_SUFFIXES, decode_file_set
from .files import labelled_files
from .images import FileSet, ImageSet
from .paths import require_folder

FOLDER_LAYOUT = "root/<class_name>/*.png|jpg|jpeg|bmp"


def list_image_folder(root: str | os.PathLike) -> FileSet:
    """List the image files of a folder whose sub-folders are the classes, not decoded.

    Hidden entries (names starting with ".") and files with other suffixes are ignored, as are
    class folders without images.

    Parameters
    ----------
    root : str or os.PathLike
        The folder of class folders.

    Returns
    -------
    FileSet
        The files, class folders and files in sorted name order, with the class folder names
        (sorted) as class names.

    Raises
    ------
    FileNotFoundError
        When ``root`` does not exist.
    NotADirectoryError
        When ``root`` is not a folder.
    ValueError
        When no class folder of ``root`` holds an image.
    """
    root = Path(root)
    require_folder(root, "image folder", FOLDER_LAYOUT)
    paths, classes = [], []
    for class_dir in _visible(root):
        if not class_dir.is_dir():
            continue
        for path in _visible(class_dir):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                classes.append(class_dir.name)
    if not paths:
        raise ValueError(f"image folder {root} holds no images; expected {FOLDER_LAYOUT}")
    return labelled_files(paths, classes)


def load_image_folder(
    root: str | os.PathLike, size: int = 64, cache_dir: str | os.PathLike | None = None
) -> ImageSet:
    """Load an image folder whose sub-folders are the classes, decoded to grayscale.

    Parameters
    ----------
    root : str or os.PathLike
        The folder of class folders (see :func:`list_image_folder` for what is listed).
    size : int, default 64
        Side of the square output images, in pixels.
    cache_dir : str or os.PathLike, optional
        When given, the decoded set is cached there (keyed by the files and ``size``).

    Returns
    -------
    ImageSet
        The images, with the class folder names (sorted) as class names.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, ValueError
        As :func:`list_image_folder`; ValueError also for a bad ``size`` or an image that cannot
        be decoded.
    """
    return decode_file_set(list_image_folder(root), size, cache_dir, "folder")


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
