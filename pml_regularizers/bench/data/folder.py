"""A generic image folder: ``root/<class_name>/*.{png,jpg,jpeg,bmp}``."""

from __future__ import annotations

import os
from pathlib import Path

from .decode import IMAGE_SUFFIXES, grayscale_loader
from .files import labelled_files
from .images import FileSet
from .paths import require_path

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
    require_path(root, "image folder", FOLDER_LAYOUT, kind="folder")
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


load_image_folder = grayscale_loader(list_image_folder, "folder", "an image folder whose sub-folders are the classes")


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
