"""A generic image folder: ``root/<class_name>/<image>``, in any format PIL opens."""

from __future__ import annotations

import os
from pathlib import Path

from .decode import grayscale_loader, readable_suffixes
from .files import labelled_files
from .images import FileSet
from .paths import require_path
from .problems import SkippedFiles

FOLDER_LAYOUT = "root/<class_name>/<image file in a format PIL opens: .jpg, .png, .webp, .tif, ...>"
HIDDEN = "hidden (name starting with '.')"
NOT_IMAGES = "not of a format PIL opens (by suffix)"
DANGLING = "dangling symlink"
FOLDERS = "folder inside a class folder"
OUTSIDE = "outside the class folders"
OTHER = "not a regular file"


def list_image_folder(root: str | os.PathLike) -> FileSet:
    """List the image files of a folder whose sub-folders are the classes, not decoded.

    Every file whose suffix names a format PIL opens (``Image.registered_extensions``, without
    the formats PIL only identifies) is an image. Whatever else the folder holds is skipped and
    accounted for in one :class:`~pml_regularizers.bench.data.problems.DataWarning` that counts
    it by reason and names the first few: hidden entries (names starting with "."), files of
    other formats, dangling symlinks, folders inside class folders and files outside them.

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
        When ``root`` holds no class folder with an image, or when a class folder holds no
        image (each such folder named, with what it holds): a class without images would drop
        out of the class list and shift the class-disjoint split.
    """
    root = Path(root)
    require_path(root, "image folder", FOLDER_LAYOUT, kind="folder")
    suffixes = readable_suffixes()
    skipped = SkippedFiles(root, f"image folder {root}")
    paths: list[Path] = []
    classes: list[str] = []
    empty: list[Path] = []
    for class_dir in sorted(root.iterdir()):
        if class_dir.name.startswith("."):
            skipped.add(HIDDEN, class_dir)
            continue
        if not class_dir.is_dir():
            skipped.add(OUTSIDE if class_dir.exists() else DANGLING, class_dir)
            continue
        before = len(paths)
        for path in sorted(class_dir.iterdir()):
            reason = _skip_reason(path, suffixes)
            if reason is None:
                paths.append(path)
                classes.append(class_dir.name)
            else:
                skipped.add(reason, path)
        if len(paths) == before:
            empty.append(class_dir)
    if empty:
        names = ", ".join(d.name for d in empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise ValueError(
            f"image folder {root}: {len(empty)} class folder(s) hold no image PIL opens: {names}; "
            "add images or remove them (a class without images would shift the class-disjoint split)"
            + (f". Skipped entries: {skipped.describe()}" if len(skipped) else "")
        )
    if not paths:
        raise ValueError(f"image folder {root} holds no class folder with images; expected {FOLDER_LAYOUT}")
    skipped.warn(len(paths))
    return labelled_files(paths, classes)


load_image_folder = grayscale_loader(list_image_folder, "folder", "an image folder whose sub-folders are the classes")


def _skip_reason(path: Path, suffixes: frozenset[str]) -> str | None:
    """Why the entry ``path`` of a class folder is not an image to read, or None when it is one."""
    if path.name.startswith("."):
        return HIDDEN
    if path.is_symlink() and not path.exists():
        return DANGLING
    if path.is_dir():
        return FOLDERS
    if not path.is_file():
        return OTHER
    if path.suffix.lower() not in suffixes:
        return NOT_IMAGES
    return None
